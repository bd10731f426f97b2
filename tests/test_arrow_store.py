"""data.storage=arrow: training rows in memory-mapped Arrow stores train exactly as rows in memory do, a
second run reuses the store without tokenising a training row, and bad rows are still named by line."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from conftest import DEMO_DATA, make_ner_files, make_qa_files, make_seq2seq_files, ner_recipe_sections, qa_recipe_sections, seq2seq_recipe_sections, tiny_recipe, write_jsonl
from transformers import PreTrainedTokenizerBase

import bert_tasks
from bert_tasks import arrow_store
from bert_tasks.assembly import prepare_task
from bert_tasks.config import load_config
from bert_tasks.errors import BertTasksError, ConfigError, DataError

TIMING = {"samples_per_second", "elapsed", "seconds", "time", "train_seconds", "eval_seconds"}


def _records(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING and not k.endswith("_per_second") and not k.endswith("seconds")} for r in records]


def _demo_csv_sections() -> dict:
    """The demo set as local csv files: the training file is read into Arrow a chunk at a time."""
    return {"data": {"dataset": None, "train": str(DEMO_DATA / "train.csv"), "validation": str(DEMO_DATA / "validation.csv")}}


SECTIONS = {
    "classification": lambda tmp: _demo_csv_sections(),
    "tagging": lambda tmp: ner_recipe_sections(make_ner_files(tmp)),
    "span_qa": lambda tmp: qa_recipe_sections(make_qa_files(tmp)),
    "seq2seq": lambda tmp: seq2seq_recipe_sections(make_seq2seq_files(tmp), max_new_tokens=8),
}


def _train(checkpoint: Path, tmp_path: Path, name: str, sections: dict, **data) -> Path:
    recipe = tiny_recipe(checkpoint, tmp_path / "runs", **sections)
    recipe["data"] = {**recipe["data"], "cache_dir": str(tmp_path / "stores"), **data}
    recipe["output"]["name"] = name
    recipe["train"]["epochs"] = 2
    bert_tasks.train(load_config(recipe))
    return tmp_path / "runs" / name


@pytest.mark.parametrize("task", sorted(SECTIONS))
def test_arrow_rows_train_exactly_as_rows_in_memory(tmp_path, tiny_checkpoint_no_dropout, task, monkeypatch):
    monkeypatch.setattr(arrow_store, "CHUNK_ROWS", 17)  # several chunks, the last one short
    sections = SECTIONS[task](tmp_path)
    memory = _train(tiny_checkpoint_no_dropout, tmp_path, "memory", sections, storage="memory")
    arrow = _train(tiny_checkpoint_no_dropout, tmp_path, "arrow", sections, storage="arrow")
    stores = [p.name for p in (tmp_path / "stores").iterdir()]
    assert sum(name.startswith("encoded-") for name in stores) == 1 and not any(name.startswith(".partial") for name in stores)
    expected, got = _records(memory), _records(arrow)
    assert any("loss" in r for r in expected) and len(expected) == len(got)
    assert got == expected  # the same rows in the same batches: every loss and metric equal


def test_a_second_run_reuses_the_store_and_tokenises_no_training_row(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    seen: list[str] = []
    original = PreTrainedTokenizerBase.__call__

    def counting(self, text=None, *args, **kwargs):
        seen.extend([text] if isinstance(text, str) else list(text or []))
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(PreTrainedTokenizerBase, "__call__", counting)
    with (DEMO_DATA / "train.csv").open() as handle:
        training = {row["text"] for row in csv.DictReader(handle)}
    with (DEMO_DATA / "validation.csv").open() as handle:
        training -= {row["text"] for row in csv.DictReader(handle)}
    _train(tiny_checkpoint, tmp_path, "first", _demo_csv_sections(), storage="arrow")
    assert training & set(seen), "the first run tokenises the training rows"
    assert "built in" in capsys.readouterr().err
    seen.clear()
    _train(tiny_checkpoint, tmp_path, "second", _demo_csv_sections(), storage="arrow", num_proc=2)  # num_proc does not change the rows
    assert seen, "the validation rows are still tokenised"
    assert not training & set(seen)
    assert "reused, not tokenised again" in capsys.readouterr().err


def test_parallel_encoding_gives_the_rows_of_encoding_in_memory(tmp_path, tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(arrow_store, "CHUNK_ROWS", 50)
    recipe = tiny_recipe(tiny_checkpoint, tmp_path / "runs", **SECTIONS["tagging"](tmp_path))
    task, splits = prepare_task(load_config(recipe))
    in_memory = task.encode(splits["train"])
    stored = arrow_store.encode_to_arrow(task, splits["train"], tmp_path / "stores", num_proc=2)
    assert len(stored.data.cache_files) == 2  # one file per process
    assert list(stored.lengths) == in_memory.lengths
    for index in (0, 1, len(in_memory) // 2, len(in_memory) - 1):
        row, expected = stored[index], in_memory[index]
        assert {k: list(v) if isinstance(v, tuple) else v for k, v in expected.items()} == row
    assert stored.__getitems__([3, 1]) == [stored[3], stored[1]]


def test_auto_keeps_small_data_in_memory_and_puts_big_data_in_arrow(tmp_path, tiny_checkpoint, monkeypatch):
    _train(tiny_checkpoint, tmp_path, "small", _demo_csv_sections())
    assert not (tmp_path / "stores").exists()
    monkeypatch.setattr(arrow_store, "AUTO_BYTES", 1024)  # the demo csv is bigger than this
    _train(tiny_checkpoint, tmp_path, "big", _demo_csv_sections())
    names = sorted(p.name.split("-")[0] for p in (tmp_path / "stores").iterdir())
    assert names == ["encoded", "raw"]


def _rows_file(path: Path, count: int, bad_at: int, bad: dict) -> Path:
    with (DEMO_DATA / "train.csv").open() as handle:
        rows = [{"text": row["text"], "label": row["label"]} for row in csv.DictReader(handle)][:count]
    rows[bad_at] = {**rows[bad_at], **bad}
    return write_jsonl(path, rows)


@pytest.mark.parametrize("bad, expected", [
    ({"extra": 1}, "line 45: fields ['extra'] differ from the first row's fields"),  # checked within its chunk
    ({"label": 3}, "line 41 onwards: field(s) ['label'] hold another kind of value than in the rows before"),  # only across chunks
])
def test_a_bad_row_in_a_later_chunk_is_named_and_leaves_no_store(tmp_path, tiny_checkpoint, monkeypatch, bad, expected):
    monkeypatch.setattr(arrow_store, "CHUNK_ROWS", 20)
    train = _rows_file(tmp_path / "train.jsonl", 100, 44, bad)
    if "label" in bad:  # every row of the third chunk has a number where the others have text
        rows = [json.loads(line) for line in train.read_text().splitlines()]
        train = write_jsonl(train, [{**r, "label": 1} if 40 <= i < 60 else r for i, r in enumerate(rows)])
    sections = {"data": {"dataset": None, "train": str(train), "validation": str(DEMO_DATA / "validation.csv")}}
    with pytest.raises(DataError) as error:
        _train(tiny_checkpoint, tmp_path, "bad", sections, storage="arrow")
    assert str(error.value).startswith(f"{train}, {expected}")
    assert "\n" not in str(error.value)
    assert not list((tmp_path / "stores").iterdir())  # no store, no partial folder


def test_bad_storage_options_are_one_line_errors(tmp_path, tiny_checkpoint):
    for override, words in (({"num_proc": 0}, "data.num_proc"), ({"storage": "disk"}, "data.storage")):
        recipe = tiny_recipe(tiny_checkpoint, tmp_path / "runs")
        recipe["data"].update(override)
        with pytest.raises((ConfigError, BertTasksError)) as error:
            load_config(recipe)
        assert words in str(error.value) and "\n" not in str(error.value)


def test_pretraining_pieces_hold_whole_documents_and_one_piece_gives_the_rows_in_memory(tmp_path, tiny_checkpoint, monkeypatch):
    from test_masked_lm import _recipe, _sentences, write_corpus

    corpus = {"train": write_corpus(tmp_path / "corpus.txt", _sentences()[:160], 4), "validation": write_corpus(tmp_path / "heldout.txt", _sentences()[160:240], 4)}
    config = load_config(_recipe(tiny_checkpoint, tmp_path, corpus, sentence_objective="nsp", rows_per_document=3))
    task, splits = prepare_task(config)
    assert task.encode_chunk_rows(10) == 9 and task.encode_chunk_rows(2) == 3  # whole documents of 3 rows
    in_memory = task.encode(splits["train"])
    stored = arrow_store.encode_to_arrow(task, splits["train"], tmp_path / "stores")  # one piece: the split is small
    assert len(stored) == len(in_memory) and all(stored[i]["input_ids"] == in_memory[i]["input_ids"] for i in range(len(stored)))
    monkeypatch.setattr(arrow_store, "CHUNK_ROWS", 6)
    pieces = arrow_store.encode_to_arrow(task, splits["train"], tmp_path / "stores")  # another key: 6 rows a piece
    assert pieces.folder != stored.folder and len(pieces) > 0


def test_cache_command_lists_and_clears_stores_and_only_dead_builds(tmp_path, tiny_checkpoint, capsys):
    import socket
    import subprocess

    from bert_tasks.cli import main

    _train(tiny_checkpoint, tmp_path, "run", _demo_csv_sections(), storage="arrow")
    stores = tmp_path / "stores"
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    killed, live = stores / f".partial-{host}-{dead.pid}-0000-encoded-x", stores / f".partial-{host}-{os.getpid()}-0000-encoded-y"
    killed.mkdir(), live.mkdir()
    (stores / "mine.txt").write_text("not a store")
    assert main(["cache", "--dir", str(tmp_path / "frozen"), "--data-dir", str(stores)]) == 0
    assert "2 training-data stores (data.storage=arrow)" in capsys.readouterr().out  # the raw rows and the encoded rows
    assert main(["cache", "--dir", str(tmp_path / "frozen"), "--data-dir", str(stores), "--clear"]) == 0
    assert sorted(p.name for p in stores.iterdir()) == sorted([live.name, "mine.txt"])
