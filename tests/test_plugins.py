"""A task and a strategy defined outside the package, one file each (tests/plugins/), work through
train, predict, publish and compare with no change to bert_tasks: a recipe names them under
``plugins``, and that is saved with the run so every later process (compare's cells, evaluate,
predict, publish) imports them too."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from conftest import tiny_recipe
from safetensors.torch import load_file

import bert_tasks
from bert_tasks.cli import main
from bert_tasks.config import load_config
from bert_tasks.publishing import publish

TESTS = Path(__file__).resolve().parent
PLUGINS = ["plugins.toy_task", "plugins.toy_strategy"]


def test_a_new_task_and_strategy_train_predict_publish_and_compare(tmp_path, tiny_checkpoint, monkeypatch):
    # the plug-ins are importable the way a user's would be: on PYTHONPATH, for this process and its children
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    recipe = tiny_recipe(tiny_checkpoint, tmp_path / "runs", task={"name": "first_token"}, strategy={"name": "bias_only"},
                         train={"epochs": 1, "max_train_samples": 64, "max_eval_samples": 32})
    recipe["plugins"] = PLUGINS

    # train: exactly the encoder's biases and the toy head learn
    summary = bert_tasks.train(load_config(recipe))
    run = tmp_path / "runs" / "run"
    assert yaml.safe_load((run / "config.yaml").read_text())["plugins"] == PLUGINS
    model = bert_tasks.load(run).model
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    expected = {name for name, _ in model.named_parameters() if name.startswith("head.") or (name.startswith("backbone.") and name.endswith(".bias"))}
    assert trainable == expected and summary.trainable_parameters == sum(p.numel() for n, p in model.named_parameters() if n in expected)
    before, after = load_file(str(tiny_checkpoint / "model.safetensors")), load_file(str(run / "best" / "model.safetensors"))
    for name, value in after.items():
        if name.startswith("backbone."):
            moved = not torch.equal(value, before[name[len("backbone."):]])
            assert moved == name.endswith(".bias"), name

    # predict and publish (no stock class: bert_tasks format) give the same answers
    texts = ["the staff were friendly and quick", "it broke after two days"]
    ours = bert_tasks.load(run).predict(texts)
    export = publish(run, tmp_path / "published")
    assert export.format == "bert_tasks", export.reason
    assert bert_tasks.load(tmp_path / "published").predict(texts) == ours
    assert "first_token" in (tmp_path / "published" / "README.md").read_text()
    # a fresh process finds the plug-ins through the published folder's training config alone
    texts_file = tmp_path / "texts.jsonl"
    texts_file.write_text("".join(f'{{"text": "{text}"}}\n' for text in texts))
    done = subprocess.run([sys.executable, "-m", "bert_tasks", "predict", str(tmp_path / "published"), "--input", str(texts_file),
                           "--output", str(tmp_path / "predictions.jsonl")], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["label"] for line in (tmp_path / "predictions.jsonl").read_text().splitlines()] == [row["label"] for row in ours]

    # compare: the cell runs in its own process, which imports the plug-ins from the recipe
    recipe["compare"] = {"seeds": [1], "name": "toys", "strategies": [{"name": "bias_only"}]}  # no grid: the strategy's default rates
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(recipe))
    code = main(["compare", str(path)])
    logs = "\n".join(p.read_text() for p in (tmp_path / "runs" / "toys").rglob("*.log"))
    assert code == 0, logs
    with (tmp_path / "runs" / "toys" / "report.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["strategy"], float(row["best_lr"])) for row in rows] == [("bias_only", 1e-3)]


def test_installed_plugins_are_found_by_entry_point(tmp_path):
    """An installed distribution declaring ``[bert_tasks.strategies]`` / ``[bert_tasks.tasks]`` entry
    points is loaded with no recipe key (here: a bare .dist-info folder on the path, as pip leaves it)."""
    info = tmp_path / "toy_plugins-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[bert_tasks.tasks]\nfirst_token = plugins.toy_task\n\n[bert_tasks.strategies]\nbias_only = plugins.toy_strategy\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH")]))}
    code = "from bert_tasks.registry import STRATEGIES, TASKS; print(TASKS.names(), STRATEGIES.names())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert "'first_token'" in done.stdout and "'bias_only'" in done.stdout
    # a broken entry point is one line naming it
    (info / "entry_points.txt").write_text("[bert_tasks.strategies]\nbroken = plugins.no_such_module\n")
    done = subprocess.run([sys.executable, "-m", "bert_tasks", "train", "demo", "strategy.name=full"], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert "entry point broken = plugins.no_such_module (group bert_tasks.strategies)" in done.stderr
