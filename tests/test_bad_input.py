"""Bad input, as a careless or hostile user gives it: every case ends in ONE line naming the file,
row/line or key and what was expected (a BertTasksError; the CLI prints it and exits 2).

The table cases call the functions that validate (config loading, readers, task.encode on the
tiny tokenizer); a few cases at the end go through the real CLI in a subprocess.
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import make_ner_files, ner_recipe_sections, qa_recipe_sections, tiny_recipe, write_conll_file
from transformers import AutoConfig, AutoTokenizer

from bert_tasks.assembly import build_task, prepare_task
from bert_tasks.config import load_config
from bert_tasks.data import read_file
from bert_tasks.devices import move_to, resolve_device
from bert_tasks.errors import BertTasksError
from bert_tasks.predictor import check_batch_size, check_prediction_paths, map_columns
from bert_tasks.atomic_files import replacing


def _one_line(error: BaseException, *parts: str) -> None:
    message = str(error)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


# -- config: every numeric key's range, names, run folders -------------------------------------
CONFIG_CASES = [
    ("train.learning_rate=-1e-5", "train.learning_rate: must be 0 or more, got -1e-05"),
    ("train.learning_rate=-.inf", "train.learning_rate: must be 0 or more, got -inf"),
    ("train.learning_rate=.nan", "train.learning_rate: must be 0 or more, got nan"),
    ("train.adam_epsilon=-1e-8", "train.adam_epsilon: must be above 0"),
    ("train.adam_epsilon=0", "train.adam_epsilon: must be above 0"),
    ("train.seed=-1", "train.seed: must be in [0, 4294967295], got -1"),
    ("train.seed=4294967296", "train.seed: must be in [0, 4294967295]"),
    ("train.weight_decay=-0.01", "train.weight_decay: must be 0 or more"),
    ("train.weight_decay=.inf", "train.weight_decay: must be 0 or more, got inf"),
    ("train.max_grad_norm=-1", "train.max_grad_norm: must be 0 or more, got -1.0; 0 turns clipping off"),
    ("train.early_stopping_patience=-1", "train.early_stopping_patience: must be 0 or more"),
    ("train.keep_checkpoints=-1", "train.keep_checkpoints: must be 0 or more"),
    ("train.epochs=0", "train.epochs: must be above 0"),
    ("train.epochs=-2", "train.epochs: must be above 0"),
    ("train.epochs=.nan", "train.epochs: must be above 0, got nan"),
    ("train.batch_size=0", "train.batch_size: must be 1 or more, got 0"),
    ("train.eval_batch_size=-4", "train.eval_batch_size: must be 1 or more"),
    ("train.gradient_accumulation_steps=0", "train.gradient_accumulation_steps: must be 1 or more"),
    ("train.warmup_ratio=1.5", "train.warmup_ratio: must be in [0, 1), got 1.5"),
    ("train.warmup_ratio=-0.1", "train.warmup_ratio: must be in [0, 1)"),
    ("train.warmup_steps=-5", "train.warmup_steps: must be 0 or more"),
    ("train.log_every=0", "train.log_every: must be 1 or more"),
    ("train.eval_every=0", "train.eval_every: must be 1 or more"),
    ("train.save_every=-3", "train.save_every: must be 1 or more"),
    ("train.max_train_samples=0", "train.max_train_samples: must be 1 or more"),
    ("train.max_eval_samples=-1", "train.max_eval_samples: must be 1 or more"),
    ("train.num_workers=-1", "train.num_workers: must be 0 or more"),
    ("train.batch_size=1.5", "train.batch_size: expected an integer, got 1.5"),
    ("model.dropout=5", "model.dropout: must be in [0, 1), got 5.0"),
    ("model.dropout=-0.1", "model.dropout: must be in [0, 1)"),
    ("task.classifier_dropout=1.0", "task.classifier_dropout: must be in [0, 1)"),
    ("task.max_length=2", "task.max_length: must be 4 or more, got 2"),
    ("output.name=..", "output.name='..': expected a plain folder name inside output.dir"),
    ("output.name=.", "output.name='.': expected a plain folder name"),
    ("output.name=../../x", "output.name='../../x': expected a plain folder name"),
    ("output.name=/tmp/elsewhere", "output.name='/tmp/elsewhere': expected a plain folder name"),
    ("output.name=runs/inner", "output.name='runs/inner': expected a plain folder name"),
    ("output.dir=", "output.dir: expected a string, got None"),
    ("strategy.name=lora strategy.dropout=1", "strategy.dropout: must be in [0, 1)"),
    ("strategy.name=lora strategy.alpha=0", "strategy.alpha: must be above 0"),
    ("strategy.name=lora strategy.r=0", "strategy.r: must be 1 or more"),
    ("strategy.name=bottleneck strategy.init_std=0", "strategy.init_std: must be above 0"),
    ("strategy.name=bottleneck strategy.reduction_factor=0", "strategy.reduction_factor: must be 1 or more"),
    ("strategy.name=last_n strategy.n=-1", "strategy.n: must be 0 or more"),
    ("task.name=tagging task.classifier_dropout=2", "task.classifier_dropout: must be in [0, 1)"),
    ("task.name=span_qa task.null_threshold=.nan", "task.null_threshold: must be a finite number, got nan"),
    ("task.name=span_qa task.n_best=0", "task.n_best and task.max_answer_length: must be 1 or more"),
    ("task.name=seq2seq task.label_smoothing=1", "task.label_smoothing: must be in [0, 1)"),
    ("task.name=seq2seq task.encoder_lr_scale=0", "task.encoder_lr_scale: must be above 0"),
    ("task.name=seq2seq task.length_penalty=.inf", "task.length_penalty: must be a finite number"),
    ("task.name=seq2seq task.min_new_tokens=80", "task.min_new_tokens=80: must not exceed task.max_new_tokens=64"),
]


@pytest.mark.parametrize("overrides, message", CONFIG_CASES, ids=[case[0] for case in CONFIG_CASES])
def test_bad_config_values_are_one_line(overrides, message):
    with pytest.raises(BertTasksError) as error:
        load_config({"recipe": "bad", "data": {"dataset": "demo"}}, overrides.split())
    _one_line(error.value, message)


def test_a_recipe_name_cannot_lead_the_run_folder_out_of_output_dir():
    with pytest.raises(BertTasksError) as error:
        load_config({"recipe": "../../outside", "data": {"dataset": "demo"}})
    _one_line(error.value, "recipe='../../outside-full': expected a plain folder name")


# -- files: encodings, compression, binary, empty, folders, structure ----------------------------
def _squad(articles) -> bytes:
    return json.dumps({"version": "1.1", "data": articles}).encode()


def _article(answer_start=0, text="alice", context="alice went to oslo .") -> dict:
    return {"title": "t", "paragraphs": [{"context": context, "qas": [{"id": "q1", "question": "who ?", "answers": [{"text": text, "answer_start": answer_start}]}]}]}


def _zip_bytes() -> bytes:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("train.csv", "text,label\na,b\n")
    return buffer.getvalue()


FILE_CASES = [
    ("latin1.csv", "text,label\ncaf\xe9 ok,positive\n".encode("latin-1"), "latin1.csv, line 2: not UTF-8 text (byte 0xe9)"),
    ("utf16.tsv", "text\tlabel\nhi\tpositive\n".encode("utf-16"), "utf16.tsv: expected UTF-8 text, but the file is UTF-16 text; re-save it as UTF-8"),
    ("packed.csv", gzip.compress(b"text,label\na,b\n"), "packed.csv: expected UTF-8 text, but the file is gzip-compressed"),
    ("packed.jsonl", gzip.compress(b'{"text": "a"}\n'), "packed.jsonl: expected UTF-8 text, but the file is gzip-compressed"),
    ("archive.csv", _zip_bytes(), "archive.csv: expected UTF-8 text, but the file is a zip archive"),
    ("binary.jsonl", bytes(range(256)), "binary.jsonl, line 1: a NUL byte; the file looks binary"),
    ("nul.tsv", b"text\tlabel\nok\tpositive\nbad\x00\tnegative\n", "nul.tsv, line 3: a NUL byte"),
    ("latin1.txt", "caf\xe9 NN I-NP O\n".encode("latin-1"), "latin1.txt, line 1: not UTF-8 text"),
    ("gz.conll", gzip.compress(b"a NN I-NP O\n"), "gz.conll: expected UTF-8 text, but the file is gzip-compressed"),
    ("empty.csv", b"", "empty.csv: the file is empty (expected a header row)"),
    ("empty.json", b"  \n", "empty.json: the file is empty (expected a JSON list of objects)"),
    ("empty.jsonl", b"\n\n", "empty.jsonl: the file has no rows"),
    ("empty.txt", b"\n\n", "empty.txt: no tokens"),
    ("header.tsv", b"text\tlabel\n", "header.tsv: the file has no rows"),
    ("fields.csv", b"text,label\na,b,c\n", "fields.csv, line 2: 3 fields, expected 2"),
    ("broken.jsonl", b'{"text": "a"}\n{"text": \n', "broken.jsonl, line 2: not valid JSON"),
    ("array.jsonl", b'{"text": "a"}\n["text"]\n', "array.jsonl, line 2: expected a JSON object, got list"),
    ("scalar.json", b"42", "scalar.json: expected a list of objects"),
    ("numbers.jsonl", b'{"text": "a", "label": "x"}\n{"text": 5, "label": "y"}\n', "numbers.jsonl, line 2: field 'text' is a number ('5'), but at line 1 it is text"),
    ("listlabel.jsonl", b'{"text": "a", "label": [1, 2]}\n{"text": "b", "label": "y"}\n', "listlabel.jsonl, line 2: field 'label' is text ('y'), but at line 1 it is a list"),
    ("object.json", json.dumps([{"text": "a", "label": 1}, {"text": {"nested": 1}, "label": 2}]).encode(), "object.json, row 2: field 'text' is an object"),
    ("tokens.jsonl", b'{"tokens": ["a", "b"]}\n{"tokens": ["c", 3]}\n', "tokens.jsonl, line 2: item 2 of field 'tokens' is a number ('3'), but the items at line 1 are text"),
    ("bools.jsonl", b'{"text": "a", "label": 1}\n{"text": "b", "label": true}\n', "bools.jsonl, line 2: field 'label' is true/false"),
    ("fieldset.jsonl", b'{"text": "a", "label": 1}\n{"text": "b"}\n', "fieldset.jsonl, line 2: fields ['label'] differ from the first row's fields"),
    ("columns.txt", b"a NN I-NP O\nb NN O\n", "columns.txt, line 2: 3 columns, expected 4 like line 1"),
    ("unknown.xlsx", b"text,label\n", "unknown.xlsx: unsupported file type '.xlsx'"),
    ("noparas.json", _squad([_article(), {"title": "lost article"}]), "noparas.json: article 1 ('lost article'): expected 'paragraphs' (a list)"),
    ("textstart.json", _squad([_article(answer_start="0")]), "textstart.json: article 0, paragraph 0, question q1: an answer needs 'text' (text) and 'answer_start' (a whole number >= 0), got"),
    ("floatstart.json", _squad([_article(answer_start=1.5)]), "floatstart.json: article 0, paragraph 0, question q1: an answer needs"),
    ("negstart.json", _squad([_article(answer_start=-1)]), "negstart.json: article 0, paragraph 0, question q1: an answer needs"),
    ("numtext.json", _squad([_article(text=7)]), "numtext.json: article 0, paragraph 0, question q1: an answer needs 'text' (text)"),
    ("noqas.json", _squad([{"title": "t", "paragraphs": [{"context": "c"}]}]), "noqas.json: article 0, paragraph 0: expected 'context' (text) and 'qas'"),
    ("noquestions.json", _squad([{"title": "t", "paragraphs": []}]), "noquestions.json: the SQuAD file has no questions"),
]


@pytest.mark.parametrize("name, content, message", FILE_CASES, ids=[case[0] for case in FILE_CASES])
def test_bad_files_are_one_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BertTasksError) as error:
        read_file("train", path)
    _one_line(error.value, str(tmp_path), message)


def test_a_folder_or_a_missing_file_given_as_data(tmp_path):
    (tmp_path / "dev.csv").mkdir()
    with pytest.raises(BertTasksError) as error:
        read_file("validation", tmp_path / "dev.csv")
    _one_line(error.value, f"data.validation='{tmp_path / 'dev.csv'}': is a folder, expected a file")
    with pytest.raises(BertTasksError) as error:
        read_file("train", tmp_path / "nope.jsonl")
    _one_line(error.value, "nope.jsonl'", "no such file")


@pytest.mark.parametrize("suffix", ["csv", "tsv", "jsonl", "json", "txt"])
def test_a_utf8_byte_order_mark_simply_works(tmp_path, suffix):
    """Excel and Notepad write a BOM: it must not become part of the first column's name."""
    content = {
        "csv": "text,label\nfine,positive\n",
        "tsv": "text\tlabel\nfine\tpositive\n",
        "jsonl": '{"text": "fine", "label": "positive"}\n',
        "json": '[{"text": "fine", "label": "positive"}]',
        "txt": "fine NN I-NP O\n",
    }[suffix]
    path = tmp_path / f"bom.{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + content.encode())
    split = read_file("train", path)
    first = "tokens" if suffix == "txt" else "text"
    assert split.dataset.column_names[0] == first and split.dataset[0][first] in ("fine", ["fine"])


# -- rows, per task: what encode accepts ------------------------------------------------------
def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _classification(tiny_checkpoint, tmp_path, **options):
    task = options.pop("task", {})
    data = {"dataset": None, "train": "x.csv", "validation": None, **options}
    config = load_config(tiny_recipe(tiny_checkpoint, tmp_path, task=task, data=data))
    return build_task(config, AutoTokenizer.from_pretrained(str(tiny_checkpoint)))


GOOD_LABELS = [{"text": "good", "label": "positive"}, {"text": "bad", "label": "negative"}]

CLASSIFICATION_CASES = [
    # (id, task options, data options, train rows (fit), split name, rows to encode, expected parts)
    ("list-label", {}, {}, None, "train", [{"text": "a", "label": ["positive"]}, {"text": "b", "label": ["negative"]}], ["line 1: field 'label' must be one label (text or a whole number), got \"['positive']\""]),
    ("object-label", {}, {}, None, "train", [{"text": "a", "label": {"x": 1}}, {"text": "b", "label": {"x": 2}}], ["line 1: field 'label' must be one label"]),
    ("minus-one-in-train", {}, {}, None, "train", [{"text": "a", "label": 1}, {"text": "b", "label": 0}, {"text": "c", "label": -1}], ["line 3: label -1 in field 'label' marks an unlabelled row (1 of 3 rows", "train data needs labels"]),
    ("minus-one-text-in-train", {}, {}, None, "train", [{"text": "a", "label": "1"}, {"text": "b", "label": "-1"}], ["line 2: label -1 in field 'label' marks an unlabelled row"]),
    ("all-unlabelled-validation", {}, {}, GOOD_LABELS, "validation", [{"text": "a", "label": -1}, {"text": "b", "label": -1}], ["line 1: label -1", "(every row, as in GLUE test files); validation data needs labels"]),
    ("unseen-label", {}, {}, GOOD_LABELS, "validation", [{"text": "a", "label": "positive"}, {"text": "b", "label": "neutral"}], ["line 2: label 'neutral' in field 'label' is not one of ['negative', 'positive']"]),
    ("empty-label", {}, {}, GOOD_LABELS, "validation", [{"text": "a", "label": ""}], ["line 1: label '' in field 'label' is not one of"]),
    ("one-class", {}, {}, None, "train", [{"text": "a", "label": "x"}, {"text": "b", "label": "x"}], ["column 'label' has 1 distinct label(s); classification needs at least 2"]),
    ("missing-label-column", {}, {}, None, "train", [{"text": "a", "stars": 1}], ["missing column 'label' (set by data.label_column); the columns are text, stars"]),
    ("missing-pair-column", {}, {"text_pair_column": "hypothesis"}, None, "train", [{"text": "a", "label": "x"}], ["missing column 'hypothesis' (set by data.text_pair_column)"]),
    ("number-text", {}, {}, GOOD_LABELS, "validation", [{"text": 5, "label": "positive"}], ["line 1: field 'text' must be text, got 5"]),
    ("null-pair", {}, {"text_pair_column": "second"}, [{"text": "a", "second": "b", "label": "x"}, {"text": "a", "second": "b", "label": "y"}], "validation", [{"text": "a", "second": None, "label": "x"}], ["line 1: field 'second' must be text, got None"]),
    ("regression-word", {"problem": "regression", "metrics": ["pearson"]}, {}, [{"text": "a", "label": 1.0}], "train", [{"text": "a", "label": "1.5"}, {"text": "b", "label": "high"}], ["line 2: field 'label' must be a number for regression, got 'high'"]),
    ("regression-bool", {"problem": "regression", "metrics": ["pearson"]}, {}, [{"text": "a", "label": 1.0}], "train", [{"text": "a", "label": True}], ["line 1: field 'label' must be a number for regression, got True"]),
    ("regression-all-unlabelled", {"problem": "regression", "metrics": ["pearson"]}, {}, [{"text": "a", "label": 1.0}], "validation", [{"text": "a", "label": -1.0}, {"text": "b", "label": -1.0}], ["every label in field 'label' is -1, the GLUE marker of an unlabelled file; validation data needs labels"]),
    ("regression-nan", {"problem": "regression", "metrics": ["pearson"]}, {}, [{"text": "a", "label": 1.0}], "train", [{"text": "a", "label": "nan"}], ["line 1: field 'label' must be a number for regression, got 'nan'"]),
]


@pytest.mark.parametrize("case", CLASSIFICATION_CASES, ids=[case[0] for case in CLASSIFICATION_CASES])
def test_bad_classification_rows(tmp_path, tiny_checkpoint, case):
    _, task_options, data_options, train_rows, split_name, rows, parts = case
    task = _classification(tiny_checkpoint, tmp_path, task=task_options, **data_options)
    path = _jsonl(tmp_path / f"{split_name}.jsonl", rows)
    with pytest.raises(BertTasksError) as error:
        task.fit(read_file("train", _jsonl(tmp_path / "fit.jsonl", train_rows)) if train_rows else read_file(split_name, path))
        task.encode(read_file(split_name, path))
    _one_line(error.value, str(tmp_path), *parts)


def test_minus_one_is_a_class_when_task_labels_says_so(tmp_path, tiny_checkpoint):
    task = _classification(tiny_checkpoint, tmp_path, task={"labels": ["-1", "1"]})
    split = read_file("train", _jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": -1}, {"text": "b", "label": 1}]))
    task.fit(split)
    assert task.encode(split).columns["labels"] == [0, 1]


def _tagging(tiny_checkpoint, tmp_path):
    files = make_ner_files(tmp_path)
    config = load_config(tiny_recipe(tiny_checkpoint, tmp_path, **ner_recipe_sections(files)))
    task = build_task(config, AutoTokenizer.from_pretrained(str(tiny_checkpoint)))
    task.fit(read_file("train", files["train"]))
    return task


TAGGING_CASES = [
    ("count-mismatch", [{"tokens": ["alice", "is"], "ner_tags": ["B-PER"]}], "line 1: 2 tokens in 'tokens' but 1 tags in 'ner_tags'"),
    ("nested-tag", [{"tokens": ["alice", "is"], "ner_tags": [["B-PER"], ["O"]]}], "line 1, item 1: field 'ner_tags': each tag must be a non-empty text or a tag id"),
    ("negative-tag-id", [{"tokens": ["alice", "is"], "ner_tags": [0, -1]}], "line 1, item 2: field 'ner_tags': tag id -1 is out of range"),
    ("empty-tag", [{"tokens": ["alice"], "ner_tags": [""]}], "line 1, item 1: field 'ner_tags': each tag must be a non-empty text"),
    ("tags-not-list", [{"tokens": ["alice"], "ner_tags": 3}], "line 1: field 'ner_tags' must be a list of tags, got '3'"),
    ("tokens-number", [{"tokens": 12, "ner_tags": ["O"]}], "line 1: field 'tokens' must be a list of non-empty tokens"),
    ("empty-sentence", [{"tokens": [], "ner_tags": []}], "line 1: empty sentence (no tokens in field 'tokens')"),
    ("blank-token", [{"tokens": ["alice", " "], "ner_tags": ["B-PER", "O"]}], "line 1: field 'tokens' must be a list of non-empty tokens"),
    ("unseen-tag", [{"tokens": ["alice"], "ner_tags": ["B-ALIEN"]}], "line 1, item 1: tag 'B-ALIEN' is not one of the"),
    ("missing-tags", [{"tokens": ["alice"], "pos": ["NN"]}], "missing column 'ner_tags' (set by data.label_column)"),
]


@pytest.mark.parametrize("case", TAGGING_CASES, ids=[case[0] for case in TAGGING_CASES])
def test_bad_tagging_rows(tmp_path, tiny_checkpoint, case):
    _, rows, message = case
    task = _tagging(tiny_checkpoint, tmp_path)
    path = _jsonl(tmp_path / "dev.jsonl", rows)
    with pytest.raises(BertTasksError) as error:
        task.encode(read_file("validation", path))
    _one_line(error.value, str(path), message)


def test_an_unseen_tag_in_a_conll_file_names_its_line(tmp_path, tiny_checkpoint):
    task = _tagging(tiny_checkpoint, tmp_path)
    path = write_conll_file(tmp_path / "dev.txt", [[("alice", "B-PER"), ("is", "O")], [("in", "O"), ("oslo", "B-ALIEN")]])
    with pytest.raises(BertTasksError) as error:
        task.encode(read_file("validation", path))
    _one_line(error.value, f"{path}, line 9: tag 'B-ALIEN'")  # -DOCSTART-, blank, alice, is, blank, -DOCSTART-, blank, in, oslo


def _span_qa(tiny_checkpoint, tmp_path, **task):
    files = {"train": tmp_path / "t.jsonl", "validation": tmp_path / "v.jsonl"}
    config = load_config(tiny_recipe(tiny_checkpoint, tmp_path, **qa_recipe_sections(files, **task)))
    return build_task(config, AutoTokenizer.from_pretrained(str(tiny_checkpoint)))


CONTEXT = "alice bought it in oslo ."
SPAN_CASES = [
    ("start-as-text", {"text": ["oslo"], "answer_start": ["19"]}, "line 1: field 'answers': answer_start must be a whole number of characters (0 or more), got '19'"),
    ("start-as-float", {"text": ["oslo"], "answer_start": [19.0]}, "line 1: field 'answers': answer_start must be a whole number"),
    ("start-negative", {"text": ["oslo"], "answer_start": [-4]}, "line 1: field 'answers': answer_start must be a whole number of characters (0 or more), got -4"),
    ("start-shifted", {"text": ["oslo"], "answer_start": [18]}, "line 1: answer 'oslo' is not in field 'context' at answer_start=18 (the context there reads ' osl')"),
    ("start-past-end", {"text": ["oslo"], "answer_start": [400]}, "line 1: answer 'oslo' is not in field 'context' at answer_start=400"),
    ("text-number", {"text": [4], "answer_start": [19]}, "line 1: field 'answers': an answer text must be non-empty text, got '4'"),
    ("starts-missing", {"text": ["oslo"], "answer_start": []}, "line 1: field 'answers' must be {'text': [...], 'answer_start': [...]} with one start per text"),
    ("answers-text", "oslo", "line 1: field 'answers' must be {'text'"),
    ("no-answer-v1", {"text": [], "answer_start": []}, "line 1: no answer; unanswerable questions need task.version_2=true"),
]


@pytest.mark.parametrize("case", SPAN_CASES, ids=[case[0] for case in SPAN_CASES])
def test_bad_span_qa_answers(tmp_path, tiny_checkpoint, case):
    _, answers, message = case
    task = _span_qa(tiny_checkpoint, tmp_path)
    path = _jsonl(tmp_path / "t.jsonl", [{"id": "1", "question": "where ?", "context": CONTEXT, "answers": answers}])
    with pytest.raises(BertTasksError) as error:
        task.encode(read_file("train", path))
    _one_line(error.value, str(path), message)


def test_bad_span_qa_questions_and_contexts(tmp_path, tiny_checkpoint):
    task = _span_qa(tiny_checkpoint, tmp_path)
    good = {"text": ["oslo"], "answer_start": [19]}
    path = _jsonl(tmp_path / "q.jsonl", [{"question": "where ?", "context": CONTEXT, "answers": good}, {"question": "  ", "context": CONTEXT, "answers": good}])
    with pytest.raises(BertTasksError) as error:
        task.encode(read_file("train", path))
    _one_line(error.value, f"{path}, line 2: field 'question' must be non-empty text")
    path = _jsonl(tmp_path / "c.jsonl", [{"question": "where ?", "passage": CONTEXT, "answers": good}])
    with pytest.raises(BertTasksError) as error:
        task.encode(read_file("train", path))
    _one_line(error.value, f"{path}: missing column 'context' (set by data.text_pair_column); the columns are question, passage, answers")


def _seq2seq(tiny_checkpoint, tmp_path):
    data = {"dataset": None, "train": "x.csv", "validation": None, "text_column": "dialogue", "label_column": "summary"}
    config = load_config(tiny_recipe(tiny_checkpoint, tmp_path, task={"name": "seq2seq", "max_source_length": 32, "max_target_length": 16}, data=data))
    return build_task(config, AutoTokenizer.from_pretrained(str(tiny_checkpoint)))


SEQ2SEQ_CASES = [
    ("empty-source", [{"dialogue": "hello", "summary": "hi"}, {"dialogue": " ", "summary": "hi"}], "line 2: field 'dialogue' must be non-empty text, got ' '"),
    ("empty-target", [{"dialogue": "hello", "summary": ""}], "line 1: field 'summary' must be non-empty text, got ''"),
    ("number-target", [{"dialogue": "hello", "summary": 3}], "line 1: field 'summary' must be non-empty text, got 3"),
    ("null-source", [{"dialogue": None, "summary": "hi"}], "line 1: field 'dialogue' must be non-empty text, got None"),
    ("missing-target", [{"dialogue": "hello", "abstract": "hi"}], "missing column 'summary' (set by data.label_column); the columns are dialogue, abstract"),
]


@pytest.mark.parametrize("case", SEQ2SEQ_CASES, ids=[case[0] for case in SEQ2SEQ_CASES])
def test_bad_seq2seq_rows(tmp_path, tiny_checkpoint, case):
    _, rows, message = case
    task = _seq2seq(tiny_checkpoint, tmp_path)
    path = _jsonl(tmp_path / "s.jsonl", rows)
    with pytest.raises(BertTasksError) as error:
        task.encode(read_file("train", path))
    _one_line(error.value, str(path), message)


# -- lengths against the checkpoint's positions: at build time, before data or weights ---------
@pytest.mark.parametrize("task, key", [({"max_length": 200}, "task.max_length=200"),
                                       ({"name": "tagging", "max_length": 129, "stride": 8}, "task.max_length=129"),
                                       ({"name": "seq2seq", "max_source_length": 300}, "task.max_source_length=300"),
                                       ({"name": "seq2seq", "max_source_length": 64, "max_new_tokens": 128}, "task.max_new_tokens=128")])
def test_lengths_above_the_position_table_fail_before_any_data_is_read(tmp_path, tiny_checkpoint, task, key):
    data = {"dataset": None, "train": str(tmp_path / "never-read.csv"), "validation": None}
    config = load_config(tiny_recipe(tiny_checkpoint, tmp_path, task=task, data=data))
    with pytest.raises(BertTasksError) as error:
        prepare_task(config)  # the data file does not exist: the length check comes first
    _one_line(error.value, key, f"model.checkpoint='{tiny_checkpoint}' has 128")
    assert AutoConfig.from_pretrained(str(tiny_checkpoint)).max_position_embeddings == 128


# -- predict: paths, batch size, devices, column overrides ---------------------------------------
def test_predict_refuses_its_input_as_output_by_any_path(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("alice NN I-NP B-PER\n")
    (tmp_path / "sub").mkdir()
    os.link(source, tmp_path / "hard.txt")
    for out in (source, tmp_path / "sub" / ".." / "in.txt", tmp_path / "hard.txt"):
        with pytest.raises(BertTasksError) as error:
            check_prediction_paths(source, out)
        _one_line(error.value, f"--output='{out}': is the input file '{source}'; predictions never overwrite their input")
    with pytest.raises(BertTasksError) as error:
        check_prediction_paths(source, tmp_path / "sub")
    _one_line(error.value, "--output=", "is a folder, expected a file name")
    with pytest.raises(BertTasksError) as error:
        check_prediction_paths(tmp_path / "missing.csv", tmp_path / "out.jsonl")
    _one_line(error.value, "--input=", "missing.csv': no such file")


@pytest.mark.parametrize("size", [0, -1])
def test_predict_batch_size_must_be_positive(size):
    with pytest.raises(BertTasksError) as error:
        check_batch_size(size)
    _one_line(error.value, f"--batch-size={size}: must be 1 or more")


@pytest.mark.parametrize("name, message", [("gpu", "--device='gpu': expected auto, cpu, cuda, cuda:N or mps"),
                                           ("cpu:1", "--device='cpu:1': expected auto"),
                                           ("cuda:99", "--device=cuda:99: "),
                                           ("mps", "--device=mps: ")])
def test_bad_or_absent_devices(name, message):
    if name == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    if name == "cuda:99" and torch.cuda.device_count() > 99:
        pytest.skip("this machine has 100 GPUs")
    with pytest.raises(BertTasksError) as error:
        resolve_device(name)
    _one_line(error.value, message)


def test_every_batch_tensor_follows_the_model_device():
    """``move_to`` reaches tensors at any depth (the meta device stands in for a GPU on a CPU machine)."""
    batch = {"inputs": {"input_ids": torch.ones(2, 3, dtype=torch.long), "extra": [torch.zeros(1), (torch.zeros(2),)]}, "index": torch.arange(2), "name": "x"}
    moved = move_to(batch, torch.device("meta"))
    tensors = [moved["inputs"]["input_ids"], moved["inputs"]["extra"][0], moved["inputs"]["extra"][1][0], moved["index"]]
    assert all(t.device.type == "meta" for t in tensors) and moved["name"] == "x"
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device("auto").type in ("cpu", "cuda", "mps")


def test_column_overrides_name_the_columns_that_exist(tmp_path, tiny_checkpoint):
    task = _classification(tiny_checkpoint, tmp_path, text_column="sentence")
    split = read_file("input", _jsonl(tmp_path / "in.jsonl", [{"review": "good", "sentence": "ignored"}]))
    renamed = map_columns(split, {"text_column": "review"}, task)
    assert renamed.dataset.column_names == ["sentence"] and renamed.dataset[0]["sentence"] == "good"
    split = read_file("input", _jsonl(tmp_path / "in2.jsonl", [{"review": "good"}]))
    with pytest.raises(BertTasksError) as error:
        map_columns(split, {"text_column": "body"}, task)
    _one_line(error.value, f"{tmp_path / 'in2.jsonl'}: no column 'body' (given by --text-column); the columns are review")
    with pytest.raises(BertTasksError) as error:
        map_columns(split, {"text_pair_column": "review"}, task)
    _one_line(error.value, "--text-pair-column=review: this run reads no data.text_pair_column")


def test_output_is_written_atomically(tmp_path):
    out = tmp_path / "predictions.jsonl"
    out.write_text("the previous predictions\n")
    with pytest.raises(RuntimeError):
        with replacing(out) as temporary:
            temporary.write_text("half of the new predi")
            raise RuntimeError("killed mid-write")
    assert out.read_text() == "the previous predictions\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.jsonl"]  # no temporary left behind
    with replacing(out) as temporary:
        temporary.write_text("new\n")
    assert out.read_text() == "new\n" and sorted(p.name for p in tmp_path.iterdir()) == ["predictions.jsonl"]
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- through the real CLI: exit 2, one line on stderr, no traceback ------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "bert_tasks", *args], capture_output=True, text=True, env=env, timeout=300)


def _assert_one_line_error(done: subprocess.CompletedProcess, *parts: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bert-tasks: error: ") and "Traceback" not in done.stderr, done.stderr
    for part in parts:
        assert part in lines[0], lines[0]


@pytest.fixture(scope="module")
def tagging_run(tmp_path_factory, tiny_checkpoint) -> Path:
    from bert_tasks.training import train

    root = tmp_path_factory.mktemp("tagging-run")
    files = make_ner_files(root)
    recipe = tiny_recipe(tiny_checkpoint, root, **ner_recipe_sections(files), train={"epochs": 1, "max_train_samples": 32, "max_eval_samples": 8})
    return Path(train(load_config(recipe)).run_dir)


def test_cli_predict_onto_its_own_conll_input_is_refused(tagging_run, tmp_path):
    """Used to leave a 0-byte file and exit 0."""
    source = write_conll_file(tmp_path / "in.txt", [[("alice", "B-PER"), ("is", "O")]])
    before = source.read_bytes()
    done = _cli("predict", str(tagging_run), "--input", str(source), "--output", str(source))
    _assert_one_line_error(done, f"--output='{source}': is the input file")
    assert source.read_bytes() == before


def test_cli_predict_maps_columns_and_checks_the_batch_size(tagging_run, tmp_path):
    words = _jsonl(tmp_path / "words.jsonl", [{"id": 1, "words": ["alice", "is"]}, {"id": 2, "words": ["in", "oslo", "."]}])
    out = tmp_path / "out.jsonl"
    done = _cli("predict", str(tagging_run), "--input", str(words), "--output", str(out), "--text-column", "words", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert [len(json.loads(line)["tags"]) for line in out.read_text().splitlines()] == [2, 3]
    _assert_one_line_error(_cli("predict", str(tagging_run), "--input", str(words), "--output", str(tmp_path / "o.jsonl"), "--batch-size", "0"),
                           "--batch-size=0: must be 1 or more")


def test_predict_writes_conll_beside_its_input_and_names_missing_columns(tagging_run, tmp_path):
    from bert_tasks.predictor import load

    predictor = load(tagging_run, device="cpu")
    assert predictor.device == torch.device("cpu")
    source = write_conll_file(tmp_path / "in.txt", [[("alice", "B-PER"), ("is", "O")]])
    assert predictor.predict_file_to(source, tmp_path / "out.txt") == 1
    lines = [line.split() for line in (tmp_path / "out.txt").read_text().splitlines()]
    assert [len(fields) for fields in lines if fields and fields[0] != "-DOCSTART-"] == [5, 5]
    words = _jsonl(tmp_path / "words.jsonl", [{"words": ["alice", "is"]}])
    with pytest.raises(BertTasksError) as error:
        predictor.predict_file_to(words, tmp_path / "out.jsonl", columns={"text_column": "sentence"})
    _one_line(error.value, f"{words}: no column 'sentence' (given by --text-column); the columns are words")
    assert not (tmp_path / "out.jsonl").exists()


class _Seen(Exception):
    """Stops the forward pass once its inputs were looked at."""


def test_prediction_batches_go_where_the_model_is(tagging_run):
    """With the model moved to another device (meta stands in for a GPU), every input the forward
    pass receives is there too; the old predictor fed CPU tensors to a model wherever it was."""
    from bert_tasks.predictor import load

    predictor = load(tagging_run, device="cpu")
    predictor.model.to("meta")
    seen: list[torch.device] = []

    def look(module, args, kwargs):
        seen.extend(t.device for t in [*args, *kwargs.values()] if isinstance(t, torch.Tensor))
        raise _Seen

    predictor.model.register_forward_pre_hook(look, with_kwargs=True)
    with pytest.raises(_Seen):
        predictor.predict([["alice", "is", "in", "oslo"]])
    assert seen and all(device.type == "meta" for device in seen) and predictor.device.type == "meta"


def test_evaluate_on_a_missing_gpu_fails_before_loading(tagging_run):
    from bert_tasks.evaluation import evaluate_run

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(BertTasksError) as error:
        evaluate_run(tagging_run, device="cuda")
    _one_line(error.value, "--device=cuda: no CUDA GPU is available here")


def test_cli_bad_training_input(tmp_path, tiny_checkpoint):
    train_file = tmp_path / "train.csv"
    train_file.write_bytes("text,label\ncaf\xe9,positive\n".encode("latin-1"))
    done = _cli("train", "recipes/demo.yaml", f"model.checkpoint={tiny_checkpoint}", "data.dataset=null", f"data.train={train_file}",
                "data.validation=null", "output.name=../../escape", f"output.dir={tmp_path}")
    _assert_one_line_error(done, "output.name='../../escape'")  # the config is checked first
    done = _cli("train", "recipes/demo.yaml", f"model.checkpoint={tiny_checkpoint}", "data.dataset=null", f"data.train={train_file}",
                "data.validation=null", f"output.dir={tmp_path}")
    _assert_one_line_error(done, f"{train_file}, line 2: not UTF-8 text")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.csv"]  # nothing was written anywhere


def test_cli_closed_pipe_is_quiet():
    reader_gone = subprocess.run(f"{sys.executable} -m bert_tasks recipes | (exec 0<&-; true); echo $((PIPESTATUS[0]))",
                                 shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=120)
    assert reader_gone.stderr == "" and reader_gone.stdout.strip() in ("0", "141")


@pytest.mark.parametrize("what", ["missing", "empty-folder", "a-file"])
def test_predict_from_something_that_is_not_a_run(tmp_path, what):
    from bert_tasks.predictor import load

    target = {"missing": tmp_path / "nope", "empty-folder": tmp_path, "a-file": tmp_path / "f.txt"}[what]
    if what == "a-file":
        target.write_text("x")
    with pytest.raises(BertTasksError) as error:
        load(target, device="cpu")
    _one_line(error.value, f"{target}: not a run directory (no config.yaml)")


# -- order: the input is read, checked and encoded before the weights load ---------------------
def _run_with_damaged_weights(run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of ``run`` whose best weights are garbage: any attempt to load them fails loudly."""
    import shutil

    copy = Path(shutil.copytree(run, tmp_path / "damaged-run"))
    weights = copy / "best" / "model.safetensors"
    assert weights.is_file()
    weights.write_bytes(b"these bytes are not a safetensors file")
    return copy, weights


def test_evaluate_checks_its_data_before_the_weights_load(tagging_run, tmp_path):
    from bert_tasks.evaluation import evaluate_run

    run, weights = _run_with_damaged_weights(tagging_run, tmp_path)
    bad = write_conll_file(tmp_path / "bad.txt", [[("alice", "B-PER"), ("is", "O")], [("in", "O"), ("oslo", "B-ALIEN")]])
    with pytest.raises(BertTasksError) as error:
        evaluate_run(run, (f"data.validation={bad}",), device="cpu")
    _one_line(error.value, f"{bad}, line 9: tag 'B-ALIEN' is not one of the")  # needs the task's saved tags, not the weights
    good = write_conll_file(tmp_path / "good.txt", [[("alice", "B-PER"), ("is", "O")]])
    with pytest.raises(BertTasksError) as error:
        evaluate_run(run, (f"data.validation={good}",), device="cpu")
    _one_line(error.value, f"{weights}: not a readable safetensors weights file")


def test_predict_checks_its_input_before_the_weights_load(tagging_run, tmp_path):
    from bert_tasks.predictor import load

    run, weights = _run_with_damaged_weights(tagging_run, tmp_path)
    bad = _jsonl(tmp_path / "bad.jsonl", [{"tokens": ["alice", "is"]}, {"tokens": []}])
    good = _jsonl(tmp_path / "good.jsonl", [{"tokens": ["alice", "is"]}])
    out = tmp_path / "out.jsonl"
    predictor = load(run, device="cpu")  # config, tokenizer and task only: the damage is not seen yet
    with pytest.raises(BertTasksError) as error:
        predictor.predict_file_to(bad, out)
    _one_line(error.value, f"{bad}, line 2: empty sentence (no tokens in field 'tokens')")
    for attempt in (lambda: predictor.predict_file_to(good, out), lambda: predictor.predict([["alice", "is"]])):
        with pytest.raises(BertTasksError) as error:
            attempt()
        _one_line(error.value, f"{weights}: not a readable safetensors weights file")
    assert not out.exists()
    _assert_one_line_error(_cli("predict", str(run), "--input", str(bad), "--output", str(out), "--device", "cpu"), f"{bad}, line 2: empty sentence")
    _assert_one_line_error(_cli("predict", str(run), "--input", str(good), "--output", str(out), "--device", "cpu"), f"{weights}: not a readable")
    assert not out.exists()
