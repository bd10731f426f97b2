"""The CLI as a user runs it: a separate process, one-line errors, exit status."""
from __future__ import annotations

import os
import subprocess
import sys


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "bert_tasks", *args], capture_output=True, text=True, env=env, timeout=300)


def test_unreachable_hub_checkpoint_is_one_line(tmp_path):
    done = _cli("train", "recipes/demo.yaml", "model.checkpoint=some-org/some-model", f"output.dir={tmp_path}")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "bert-tasks: error: model.checkpoint='some-org/some-model': not a local folder, and the Hugging Face Hub could not provide it (offline, or no such model)"
    ]


def test_missing_local_checkpoint_folder(tmp_path):
    done = _cli("train", "recipes/demo.yaml", f"model.checkpoint={tmp_path}/nowhere", f"output.dir={tmp_path}")
    assert done.returncode == 2
    assert done.stderr.strip() == f"bert-tasks: error: model.checkpoint='{tmp_path}/nowhere': no such folder"


def test_bad_data_file_is_one_line(tmp_path, tiny_checkpoint):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nfine,positive\n,\nstill fine,negative\n")
    good = tmp_path / "good.csv"
    good.write_text("text,label\nfine,positive\nbad,negative\n")
    done = _cli("train", "recipes/demo.yaml", f"model.checkpoint={tiny_checkpoint}", "data.dataset=null",
                f"data.train={good}", f"data.validation={bad}", f"output.dir={tmp_path}")
    assert done.returncode == 2
    assert done.stderr.strip() == f"bert-tasks: error: {bad}, line 3: label '' in field 'label' is not one of ['negative', 'positive'] (labels come from the training data or task.labels)"


def test_python_m_lists_recipes():
    done = _cli("recipes")
    assert done.returncode == 0 and "glue/mnli" in done.stdout


def test_bad_conll_file_is_one_line(tmp_path, tiny_checkpoint):
    train = tmp_path / "train.txt"
    train.write_text("alice NN I-NP B-PER\nis NN I-NP O\n\noslo NN I-NP B-LOC\n")
    dev = tmp_path / "dev.txt"
    dev.write_text("-DOCSTART- -X- -X- O\n\nbob NN I-NP B-PER\nin NN I-NP O\ncairo NN B-LOC\n")
    done = _cli("train", "conll2003", f"model.checkpoint={tiny_checkpoint}", "data.dataset=null",
                f"data.train={train}", f"data.validation={dev}", f"output.dir={tmp_path}")
    assert done.returncode == 2
    assert done.stderr.strip() == f"bert-tasks: error: {dev}, line 5: 3 columns, expected 4 like line 3 (tokens pos_tags chunk_tags ner_tags)"
