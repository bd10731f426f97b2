"""Prediction of csv / tsv / jsonl files a chunk at a time: the answers of whole-file prediction, in
input order; bad rows far into a file still name their line; memory does not grow with the file."""
from __future__ import annotations

import csv
import json
import random
import tracemalloc
from pathlib import Path

import pytest
from conftest import tiny_recipe

import bert_tasks
from bert_tasks.config import load_config
from bert_tasks.errors import ConfigError, DataError

WORDS = "the staff were friendly and quick it broke after two days great food slow service".split()


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_checkpoint) -> Path:
    root = tmp_path_factory.mktemp("streamed")
    bert_tasks.train(load_config(tiny_recipe(tiny_checkpoint, root, train={"max_train_samples": 32, "max_eval_samples": 16})))
    return root / "run"


def sentences(count: int, seed: int = 0) -> list[str]:
    """Sentences of 1 to 30 words, so that length sorting really reorders each chunk."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30))) for _ in range(count)]


def write_csv(path: Path, texts: list[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows([i, text] for i, text in enumerate(texts))
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_chunked_prediction_equals_whole_prediction_in_input_order(run, tmp_path, suffix):
    texts = sentences(103)
    if suffix == ".csv":
        source = write_csv(tmp_path / "in.csv", texts)
    else:
        source = tmp_path / "in.jsonl"
        source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    predictor = bert_tasks.load(run, device="cpu")
    whole = predictor.predict(texts, batch_size=8)
    assert predictor.predict_file_to(source, tmp_path / "out.jsonl", batch_size=8, chunk_rows=10) == 103
    streamed = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [p["label"] for p in streamed] == [p["label"] for p in whole]
    for a, b in zip(streamed, whole):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)


def test_a_bad_row_in_a_late_chunk_names_its_line_and_writes_nothing(run, tmp_path):
    source = write_csv(tmp_path / "in.csv", sentences(40))
    lines = source.read_text().splitlines()
    lines[35] += ",surplus"
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    with pytest.raises(DataError, match=r"in\.csv, line 36: 3 fields, expected 2"):
        bert_tasks.load(run, device="cpu").predict_file_to(source, out, chunk_rows=8)
    assert not out.exists()


def test_an_empty_file_and_a_bad_chunk_size_are_clear_errors(run, tmp_path):
    predictor = bert_tasks.load(run, device="cpu")
    empty = tmp_path / "empty.csv"
    empty.write_text("id,text\n")
    with pytest.raises(DataError, match="the file has no rows"):
        predictor.predict_file_to(empty, tmp_path / "out.jsonl")
    with pytest.raises(ConfigError, match="chunk_rows=0"):
        predictor.predict_file_to(write_csv(tmp_path / "in.csv", ["fine"]), tmp_path / "out.jsonl", chunk_rows=0)


def test_memory_stays_flat_as_the_file_grows(run, tmp_path):
    """Python-side peak while predicting 10x more rows stays about the same (whole-file reading and
    answer lists would grow 10x)."""
    predictor = bert_tasks.load(run, device="cpu")
    predictor.predict(["warm up"])
    peaks = []
    for count in (500, 5000):
        source = write_csv(tmp_path / f"in{count}.csv", sentences(count, seed=count))
        tracemalloc.start()
        predictor.predict_file_to(source, tmp_path / f"out{count}.jsonl", batch_size=32, chunk_rows=250)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert len((tmp_path / f"out{count}.jsonl").read_text().splitlines()) == count
    assert peaks[1] < 2 * peaks[0], peaks
