"""data.streaming: pretraining rows read, encoded and batched as training goes. A pass holds the rows the
corpus encodes to, chunk by chunk; batches are full and seeded; a cut-back run resumes to the same
records; what cannot stream is refused in one line."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import metric_records, tiny_recipe
from test_masked_lm import _recipe, _sentences, write_corpus

import bert_tasks
from bert_tasks import streaming
from bert_tasks.assembly import prepare_task
from bert_tasks.checkpointing import checkpoint_dirs
from bert_tasks.config import load_config
from bert_tasks.errors import ConfigError


@pytest.fixture()
def corpus(tmp_path) -> dict[str, Path]:
    sentences = _sentences()
    return {"train": write_corpus(tmp_path / "corpus.txt", sentences[:160], 4), "validation": write_corpus(tmp_path / "heldout.txt", sentences[160:240], 4)}


def _streaming_recipe(checkpoint, tmp_path, corpus, name="stream", **train) -> dict:
    recipe = _recipe(checkpoint, tmp_path, corpus, name=name, sentence_objective="nsp", train_options={"max_steps": 12, "eval_every": 4, "keep_checkpoints": 0, **train})
    recipe["data"]["streaming"] = True
    return recipe


def _rows(stream: streaming.StreamedBatches) -> list[dict]:
    return [dict(row) for row in stream]


def test_a_pass_holds_the_corpus_rows_in_full_seeded_batches(tmp_path, tiny_checkpoint, corpus, monkeypatch):
    config = load_config(_streaming_recipe(tiny_checkpoint, tmp_path, corpus))
    task, splits = prepare_task(config)
    whole = task.encode(bert_tasks.data.load_split("train", str(corpus["train"]), plain_text=True))
    stream = streaming.training_stream(config, task)  # the corpus fits one chunk: the same rows as encoding it whole
    rows = _rows(stream)
    assert len(rows) % 8 == 0 and len(whole) - 8 < len(rows) <= len(whole)  # full batches of 8; the rest dropped
    indices = [r["index"] for r in rows]
    assert len(set(indices)) == len(rows) and max(indices) < len(whole)  # a row's number within its pass
    as_ids = sorted(tuple(r["input_ids"]) for r in rows)
    assert set(as_ids) <= {tuple(whole[i]["input_ids"]) for i in range(len(whole))}
    assert [r["input_ids"] for r in _rows(stream)] == [r["input_ids"] for r in rows]  # seeded: the same order again
    stream.use_epoch(1)
    assert [r["input_ids"] for r in _rows(stream)] != [r["input_ids"] for r in rows]  # another pass, another order
    assert len(stream) == 12 and stream.rows_in_batch(3) == 8 and stream.real_rows(3, 0, 2) is None


def test_the_corpus_is_read_and_encoded_a_chunk_at_a_time(tmp_path, tiny_checkpoint, corpus, monkeypatch):
    monkeypatch.setattr(streaming, "CHUNK_DOCUMENTS", 7)
    config = load_config(_streaming_recipe(tiny_checkpoint, tmp_path, corpus))
    task, _ = prepare_task(config)
    sizes: list[int] = []
    encode = task.encode
    monkeypatch.setattr(task, "encode", lambda split, *a, **k: sizes.append(len(split)) or encode(split, *a, **k))
    _rows(streaming.training_stream(config, task))
    assert sizes and max(sizes) == 7 and sum(sizes) == 40  # 160 sentences, 4 per document


def test_streamed_pretraining_trains_and_resumes_to_the_same_records(tmp_path, tiny_checkpoint, corpus):
    bert_tasks.train(load_config(_streaming_recipe(tiny_checkpoint, tmp_path, corpus, name="whole")))
    whole = tmp_path / "runs" / "whole"
    records = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    start = next(r for r in records if r["event"] == "start")
    assert start["total_steps"] == 12 and start["train_examples"] is None
    assert [r["step"] for r in records if r["event"] == "eval"] == [4, 8, 12]
    cut = tmp_path / "runs" / "cut"
    shutil.copytree(whole, cut)
    for folder in checkpoint_dirs(cut)[1:]:  # keep step 4 of 12: the stream is read again up to there
        shutil.rmtree(folder)
    (cut / "summary.json").unlink()
    bert_tasks.train(load_config(_streaming_recipe(tiny_checkpoint, tmp_path, corpus, name="cut", resume=True)))
    assert metric_records(cut) == metric_records(whole)


@pytest.mark.parametrize("change, words", [
    ({"train": {"max_steps": None}}, "set train.max_steps"),
    ({"task": {"name": "classification"}}, "only pretraining (mlm) streams"),
    ({"train": {"cache_frozen": True}}, "train.cache_frozen=true"),
    ({"data": {"train": "corpus.json"}}, "data.streaming reads csv, tsv, jsonl or .txt files and Hub data sets"),
    ({"data": {"train": "corpus.txt[:10]"}}, "a row range cannot be streamed"),
])
def test_what_cannot_stream_is_refused_in_one_line(tmp_path, tiny_checkpoint, corpus, change, words):
    recipe = _streaming_recipe(tiny_checkpoint, tmp_path, corpus)
    (tmp_path / "corpus.json").write_text("[]")
    for section, values in change.items():
        if section == "task":
            recipe["task"] = {**values, "max_length": 32}
            recipe["data"].update({"dataset": "demo", "train": "train", "validation": "validation", "text_column": "text"})
        elif section == "data":
            recipe["data"].update({k: str(tmp_path / v) for k, v in values.items()})
        else:
            recipe[section].update(values)
    with pytest.raises(ConfigError) as error:
        bert_tasks.train(load_config(recipe))
    assert words in str(error.value) and "\n" not in str(error.value)


def test_a_demo_table_streams_too(tmp_path, tiny_checkpoint):
    recipe = tiny_recipe(tiny_checkpoint, tmp_path / "runs", task={"name": "mlm", "max_length": 32},
                         data={"streaming": True}, train={"max_steps": 5, "max_train_samples": None})
    summary = bert_tasks.train(load_config(recipe))
    assert summary.steps == 5
