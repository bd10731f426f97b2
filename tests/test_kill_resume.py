"""Real training processes killed with SIGKILL (mid-step, mid-checkpoint-write), then resumed: the
resumed run ends bit for bit where an uninterrupted run ends (best and final weights, metrics)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import metric_records, tiny_recipe
from safetensors.torch import load_file

import bert_tasks
from bert_tasks.checkpointing import checkpoint_dirs
from bert_tasks.config import load_config
from bert_tasks.rundir import read_metrics
from bert_tasks.run_lock import LOCK_FILE

# 64 rows / batch 16 = 4 steps per epoch, 2 epochs; checkpoints at every evaluation (every 2 steps)
TRAIN = {"epochs": 2, "eval_every": 2, "save_every": 2, "keep_checkpoints": 2, "log_every": 1, "max_train_samples": 64}


def _recipe(checkpoint, root: Path, **train) -> dict:
    return tiny_recipe(checkpoint, root, train={**TRAIN, **train})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_checkpoint) -> Path:
    root = tmp_path_factory.mktemp("uninterrupted")
    bert_tasks.train(load_config(_recipe(tiny_checkpoint, root)))
    return root / "run"


def _start_training(recipe: dict, folder: Path) -> tuple[subprocess.Popen, Path]:
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    stderr = folder / "stderr.txt"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    with stderr.open("w") as err:
        process = subprocess.Popen([sys.executable, "-m", "bert_tasks", "train", str(path)], stdout=subprocess.DEVNULL, stderr=err, env=env)
    return process, stderr


def _kill_when(process: subprocess.Popen, condition, timeout: float = 240.0) -> None:
    """SIGKILL ``process`` the moment ``condition()`` holds (polled as fast as Python can)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"training ended (exit {process.returncode}) before the kill point")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("kill point not reached")
    process.send_signal(signal.SIGKILL)
    process.wait()


def _assert_same_run(resumed: Path, reference: Path) -> None:
    for name in ("best/model.safetensors", f"checkpoints/{checkpoint_dirs(reference)[-1].name}/model.safetensors"):
        a, b = load_file(str(reference / name)), load_file(str(resumed / name))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    assert metric_records(resumed) == metric_records(reference)  # each step once, same numbers
    assert [p.name for p in checkpoint_dirs(resumed)] == [p.name for p in checkpoint_dirs(reference)]
    assert not (resumed / LOCK_FILE).exists()


def test_killed_while_writing_a_checkpoint(tmp_path, tiny_checkpoint, uninterrupted, capsys):
    process, stderr = _start_training(_recipe(tiny_checkpoint, tmp_path), tmp_path)
    partial = tmp_path / "run" / "checkpoints" / ".step-0000006.partial"
    _kill_when(process, partial.exists)
    assert partial.is_dir() and not (tmp_path / "run" / "checkpoints" / "step-0000006").exists()  # killed mid-write
    # stderr was a file, not a terminal: one plain line per logged step, no carriage-return bar
    lines = [line for line in stderr.read_text().splitlines() if line.startswith("run: step ")]
    assert len(lines) == 6 and lines[0].startswith("run: step 1/8 (12%) loss ") and " samples/s elapsed 0:0" in lines[0]
    assert "\r" not in stderr.read_text()
    assert (tmp_path / "run" / LOCK_FILE).is_file()  # the killed training's lock, now stale
    capsys.readouterr()
    summary = bert_tasks.train(load_config(_recipe(tiny_checkpoint, tmp_path, resume=True)))
    err = capsys.readouterr().err
    assert "taking over the lock of a training that is gone" in err and "did not finish writing" in err
    assert summary.steps == 8
    _assert_same_run(tmp_path / "run", uninterrupted)


@pytest.mark.slow
def test_killed_mid_step(tmp_path, tiny_checkpoint, uninterrupted):
    process, _ = _start_training(_recipe(tiny_checkpoint, tmp_path), tmp_path)
    metrics = tmp_path / "run" / "metrics.jsonl"
    _kill_when(process, lambda: metrics.is_file() and '"step": 5,' in metrics.read_text())  # after checkpoint 4, before 6
    bert_tasks.train(load_config(_recipe(tiny_checkpoint, tmp_path, resume=True)))
    _assert_same_run(tmp_path / "run", uninterrupted)
