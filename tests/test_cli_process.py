"""The CLI as a user runs it: a separate process, one-line errors, exit status."""
from __future__ import annotations

import os
import subprocess
import sys


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "bert_tasks", *args], capture_output=True, text=True, env=env, timeout=300)


def test_unreachable_hub_checkpoint_is_one_line(tmp_path):
    done = _cli("train", "demo", "model.checkpoint=some-org/some-model", f"output.dir={tmp_path}")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "bert-tasks: error: model.checkpoint='some-org/some-model': not a local folder, and the Hugging Face Hub could not provide it (offline, or no such model)"
    ]


def test_missing_local_checkpoint_folder(tmp_path):
    done = _cli("train", "demo", f"model.checkpoint={tmp_path}/nowhere", f"output.dir={tmp_path}")
    assert done.returncode == 2
    assert done.stderr.strip() == f"bert-tasks: error: model.checkpoint='{tmp_path}/nowhere': no such folder"


def _train_on_files(recipe: str, checkpoint, folder, train: tuple[str, str], validation: tuple[str, str], *overrides: str) -> subprocess.CompletedProcess:
    """Train ``recipe`` on two small files written from (name, content)."""
    for name, content in (train, validation):
        (folder / name).write_text(content)
    return _cli("train", recipe, f"model.checkpoint={checkpoint}", "data.dataset=null",
                f"data.train={folder / train[0]}", f"data.validation={folder / validation[0]}", f"output.dir={folder}", *overrides)


def test_bad_data_file_is_one_line(tmp_path, tiny_checkpoint):
    bad = tmp_path / "bad.csv"
    done = _train_on_files("demo", tiny_checkpoint, tmp_path, ("good.csv", "text,label\nfine,positive\nbad,negative\n"),
                           ("bad.csv", "text,label\nfine,positive\n,\nstill fine,negative\n"))
    assert done.returncode == 2
    assert done.stderr.strip() == f"bert-tasks: error: {bad}, line 3: label '' in field 'label' is not one of ['negative', 'positive'] (labels come from the training data or task.labels)"


def test_python_m_lists_recipes():
    done = _cli("recipes")
    assert done.returncode == 0 and "glue/mnli" in done.stdout


def test_bad_conll_file_is_one_line(tmp_path, tiny_checkpoint):
    dev = tmp_path / "dev.txt"
    done = _train_on_files("conll2003", tiny_checkpoint, tmp_path, ("train.txt", "alice NN I-NP B-PER\nis NN I-NP O\n\noslo NN I-NP B-LOC\n"),
                           ("dev.txt", "-DOCSTART- -X- -X- O\n\nbob NN I-NP B-PER\nin NN I-NP O\ncairo NN B-LOC\n"),
                           "task.max_length=64", "task.stride=16")  # the tiny model has 128 positions
    assert done.returncode == 2
    assert done.stderr.strip() == f"bert-tasks: error: {dev}, line 5: 3 columns, expected 4 like line 3 (tokens pos_tags chunk_tags ner_tags)"
