"""Readers and the errors bad data gets: file, line and what was expected."""
from __future__ import annotations

import json

import datasets
import pytest
from conftest import write_csv

from bert_tasks.config import load_config
from bert_tasks.data import load_split, read_file
from bert_tasks.errors import DataError
from bert_tasks.tasks.classification import Classification


def _task(tokenizer_path, **task):
    from transformers import AutoTokenizer

    config = load_config("demo", [f"model.checkpoint={tokenizer_path}"] + [f"task.{k}={v}" for k, v in task.items()])
    return Classification(config.task, config.data, AutoTokenizer.from_pretrained(str(tokenizer_path)))


def test_all_local_formats_read_the_same_rows(tmp_path):
    rows = [{"text": "good kettle", "label": "positive"}, {"text": 'a "quoted" bad one', "label": "negative"}]
    write_csv(tmp_path / "a.csv", rows)
    (tmp_path / "a.tsv").write_text("text\tlabel\n" + "\n".join(f"{r['text']}\t{r['label']}" for r in rows) + "\n")
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "a.json").write_text(json.dumps({"data": rows}))
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "a.parquet"))
    for suffix in ("csv", "tsv", "jsonl", "json", "parquet"):
        split = read_file("train", tmp_path / f"a.{suffix}")
        assert split.dataset.to_list() == rows, suffix


def test_tsv_keeps_quotes_as_text_and_reports_lines(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text('sentence\tlabel\n"it \'s fine\t1\nbad\n')
    with pytest.raises(DataError, match=r"t.tsv, line 3: 1 fields, expected 2"):
        read_file("train", path)


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(DataError, match="data.train='.*nope.csv': no such file"):
        load_split("train", str(tmp_path / "nope.csv"))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty.csv: the file is empty"):
        read_file("train", tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("text,label\n")
    with pytest.raises(DataError, match="header.csv: the file has no rows"):
        read_file("train", tmp_path / "header.csv")


def test_bad_json_line_is_named(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "a", "label": "b"}\n{"text": oops}\n')
    with pytest.raises(DataError, match=r"x.jsonl, line 2: not valid JSON"):
        read_file("train", path)


def test_missing_column_lists_the_columns(tmp_path, tiny_checkpoint):
    split = read_file("train", write_csv(tmp_path / "a.csv", [{"sentence": "x", "label": "positive"}, {"sentence": "y", "label": "negative"}]))
    with pytest.raises(DataError, match=r"a.csv: missing column 'text' \(set by data.text_column\); the columns are sentence, label"):
        _task(tiny_checkpoint).fit(split)


def test_unknown_label_in_evaluation_data(tmp_path, tiny_checkpoint):
    task = _task(tiny_checkpoint)
    task.fit(read_file("train", write_csv(tmp_path / "t.csv", [{"text": "a", "label": "positive"}, {"text": "b", "label": "negative"}])))
    dev = read_file("validation", write_csv(tmp_path / "d.csv", [{"text": "a", "label": "positive"}, {"text": "b", "label": "neutral"}]))
    with pytest.raises(DataError, match=r"d.csv, line 3: label 'neutral' in field 'label' is not one of \['negative', 'positive'\]"):
        task.encode(dev)


def test_regression_target_must_be_numeric(tmp_path, tiny_checkpoint):
    task = _task(tiny_checkpoint, problem="regression", metrics="[pearson]")
    split = read_file("train", write_csv(tmp_path / "r.csv", [{"text": "a", "label": "1.5"}, {"text": "b", "label": "high"}]))
    task.fit(split)
    with pytest.raises(DataError, match=r"r.csv, line 3: field 'label' must be a number for regression, got 'high'"):
        task.encode(split)


def test_missing_text_value(tmp_path, tiny_checkpoint):
    path = tmp_path / "m.jsonl"
    path.write_text('{"text": "fine", "label": "positive"}\n{"text": null, "label": "negative"}\n')
    task = _task(tiny_checkpoint)
    split = read_file("train", path)
    task.fit(split)
    with pytest.raises(DataError, match=r"m.jsonl, line 2: field 'text' must be text, got None"):
        task.encode(split)


def test_labels_collected_sorted_and_integer_labels_numeric(tmp_path, tiny_checkpoint):
    task = _task(tiny_checkpoint)
    task.fit(read_file("train", write_csv(tmp_path / "i.csv", [{"text": "a", "label": "10"}, {"text": "b", "label": "2"}, {"text": "c", "label": "1"}])))
    assert task.labels == ["1", "2", "10"]


def test_classlabel_names_are_used(tiny_checkpoint):
    from bert_tasks.data import Split

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    data = datasets.Dataset.from_dict({"text": ["a", "b"], "label": [1, 0]}, features=features)
    task = _task(tiny_checkpoint)
    task.fit(Split("train", data, "hub x"))
    assert task.labels == ["neg", "pos"]
    assert list(task.encode(Split("train", data, "hub x")).columns["labels"]) == [1, 0]


def test_hub_dataset_offline_is_one_line_error():
    with pytest.raises(DataError) as error:
        load_split("train", "train", dataset="no-such-org/no-such-dataset-network")
    assert "cannot load hub no-such-org/no-such-dataset-network [train]" in str(error.value)
    assert "\n" not in str(error.value)
