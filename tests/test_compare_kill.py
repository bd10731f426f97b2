"""Stopping `bert-tasks compare` stops the cell it is running (no orphan keeps training), and
running it again resumes that cell from its checkpoint. Real processes, real signals."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import ROOT, tiny_recipe

from bert_tasks.comparison import load_comparison


def _start_compare(recipe: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "bert_tasks", "compare", str(recipe)], stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def _running_cell(compare: subprocess.Popen, run_dir: Path, timeout: float = 120.0) -> psutil.Process:
    """The cell process of ``compare`` once it has written a checkpoint (so there is something to resume)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert compare.poll() is None, "compare ended before its cell was caught training"
        children = psutil.Process(compare.pid).children()
        if children and list((run_dir / "checkpoints").glob("step-*")):
            return children[0]
        time.sleep(0.1)
    raise AssertionError("no cell wrote a checkpoint in time")


def _gone(process: psutil.Process, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="stopping a cell on SIGKILL of compare relies on Linux prctl")
def test_killing_compare_stops_its_cell_and_a_rerun_resumes(tmp_path, tiny_checkpoint):
    recipe = tiny_recipe(tiny_checkpoint, tmp_path / "runs", train={
        "epochs": 40, "batch_size": 16, "max_train_samples": 64, "max_eval_samples": 16, "eval_every": 10, "log_every": 10})
    recipe["compare"] = {"seeds": [1], "name": "killed", "strategies": [{"name": "last_n", "n": 1, "learning_rates": [1e-3]}]}
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(recipe))
    comparison = load_comparison(path)
    run_dir = comparison.run_dir(comparison.cells[0])

    for number, how in enumerate((signal.SIGTERM, signal.SIGKILL)):
        compare = _start_compare(path, tmp_path / f"compare{number}.log")
        try:
            cell = _running_cell(compare, run_dir)
            compare.send_signal(how)
            compare.wait(timeout=60)
            assert _gone(cell, timeout=10), f"the cell kept running after compare got {how.name}"
        finally:
            if compare.poll() is None:
                compare.kill()
        assert not (run_dir / "summary.json").exists()
        if number == 1:
            assert "resuming ..." in (tmp_path / "compare1.log").read_text()

    # run again to the end: the cell resumes from its newest checkpoint and finishes
    compare = _start_compare(path, tmp_path / "compare2.log")
    assert compare.wait(timeout=600) == 0, (tmp_path / "compare2.log").read_text()
    assert "resuming ..." in (tmp_path / "compare2.log").read_text()
    assert (run_dir / "summary.json").is_file()
