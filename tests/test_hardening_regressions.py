"""Regressions found by trying the merged hardening work as a new user and as an attacker would:
each test is one case that once lost a file, ran past bad input or printed a traceback."""
from __future__ import annotations

import pytest
from conftest import tiny_recipe

import bert_tasks
from bert_tasks.cli import main
from bert_tasks.config import load_config

SHORT = {"epochs": 1, "eval_every": 2, "save_every": 2, "keep_checkpoints": 0, "max_train_samples": 64}


def test_overwrite_keeps_a_foreign_folder_holding_a_config_and_metrics(tmp_path, tiny_checkpoint):
    """config.yaml + metrics.jsonl is what many tools write: alone it does not make a folder ours."""
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text("lr: 1\n")
    (folder / "metrics.jsonl").write_text('{"loss": 1}\n')
    (folder / "thesis.tex").write_text("years of work")
    config = load_config(tiny_recipe(tiny_checkpoint, tmp_path, train=SHORT, output={"overwrite": True}))
    with pytest.raises(bert_tasks.BertTasksError, match="is not a bert_tasks run folder .*nothing was changed"):
        bert_tasks.train(config)
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoints", "config.yaml", "metrics.jsonl", "thesis.tex"]
    assert (folder / "thesis.tex").read_text() == "years of work"


def test_predict_refuses_an_existing_output_unless_told(tmp_path, capsys):
    """The tool cannot tell a file it wrote from a user's: an existing --output needs --overwrite
    (checked before any run or weights load, so no run folder is needed here)."""
    source, out = tmp_path / "in.jsonl", tmp_path / "notes.jsonl"
    source.write_text('{"text": "fine"}\n')
    out.write_text("my notes\n")
    assert main(["predict", str(tmp_path / "no-run"), "--input", str(source), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "notes.jsonl" in err and "--overwrite" in err
    assert out.read_text() == "my notes\n"
    # with --overwrite the existing-file check passes: the next complaint is the missing run
    assert main(["predict", str(tmp_path / "no-run"), "--input", str(source), "--output", str(out), "--overwrite"]) == 2
    assert "not a run directory" in capsys.readouterr().err and out.read_text() == "my notes\n"


def test_a_key_given_twice_in_a_recipe_is_refused(tmp_path):
    """Plain YAML keeps the last of two equal keys: half a recipe was silently dropped."""
    recipe = tmp_path / "twice.yaml"
    recipe.write_text("model:\n  checkpoint: a\ntrain:\n  epochs: 1\n  epochs: 3\n")
    with pytest.raises(bert_tasks.BertTasksError, match=r"twice\.yaml line 5: not valid YAML \(key 'epochs' appears twice in one mapping\)"):
        load_config(str(recipe))
