"""Run folders are never lost or shared: overwrite removes only our own runs and only after the new
run's data checked out; a folder has one training at a time; resume reads no pickle and skips a
damaged checkpoint; metrics.jsonl holds each step once after a resume."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
import torch
from conftest import metric_records, tiny_recipe
from safetensors.torch import load_file

import bert_tasks
from bert_tasks.checkpointing import MANIFEST_FILE, OPTIMIZER_FILE, checkpoint_dirs
from bert_tasks.cli import main
from bert_tasks.config import load_config
from bert_tasks.rundir import read_metrics
from bert_tasks.run_guard import RUN_MARKER
from bert_tasks.run_lock import LOCK_FILE, RunLock

SHORT = {"epochs": 1, "eval_every": 2, "save_every": 2, "keep_checkpoints": 0, "max_train_samples": 64}


def _config(checkpoint, root, **train):
    return load_config(tiny_recipe(checkpoint, root, train={**SHORT, **train}))


def _train(checkpoint, root, **train):
    return bert_tasks.train(_config(checkpoint, root, **train))


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, tiny_checkpoint):
    precious = tmp_path / "run" / "thesis.tex"
    precious.parent.mkdir()
    precious.write_text("years of work")
    for train in ({"resume": False}, {}):
        config = load_config(tiny_recipe(tiny_checkpoint, tmp_path, train={**SHORT, **train}, output={"overwrite": True}))
        with pytest.raises(bert_tasks.BertTasksError, match="is not a bert_tasks run folder .*nothing was changed"):
            bert_tasks.train(config)
    assert precious.read_text() == "years of work" and sorted(p.name for p in precious.parent.iterdir()) == ["thesis.tex"]


def test_overwrite_waits_until_the_new_data_is_valid(tmp_path, tiny_checkpoint):
    _train(tiny_checkpoint, tmp_path)
    run = tmp_path / "run"
    before = sorted(p.relative_to(run).as_posix() for p in run.rglob("*"))
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text("text,label\nfine,positive\nbad,negative\n")
    bad.write_text("text,label\nfine,positive\n,\n")
    overrides = {"overwrite": True}
    recipe = tiny_recipe(tiny_checkpoint, tmp_path, train=SHORT, output=overrides, data={"dataset": None, "train": str(good), "validation": str(bad)})
    with pytest.raises(bert_tasks.BertTasksError, match="bad.csv, line 3"):
        bert_tasks.train(load_config(recipe))
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*")) == before  # nothing deleted, no lock left
    # valid data: the old run is replaced (its checkpoints and metrics go)
    old_eval_steps = [e["step"] for e in read_metrics(run) if e["event"] == "eval"]
    summary = bert_tasks.train(load_config(tiny_recipe(tiny_checkpoint, tmp_path, train={**SHORT, "eval_every": 3}, output=overrides)))
    assert summary.steps == 4 and old_eval_steps == [2, 4]
    assert [e["step"] for e in read_metrics(run) if e["event"] == "eval"] == [3, 4]
    assert (run / RUN_MARKER).is_file() and not (run / LOCK_FILE).exists()


def test_a_second_training_is_refused_while_one_holds_the_folder(tmp_path, tiny_checkpoint):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / RUN_MARKER).write_text("{}")  # as the holder's training left it
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        lock = {"pid": holder.pid, "host": socket.gethostname(), "started": time.time()}
        (tmp_path / "run" / LOCK_FILE).write_text(json.dumps(lock))
        with pytest.raises(bert_tasks.BertTasksError, match=f"another training is using this run folder \\(pid {holder.pid} on {socket.gethostname()}"):
            _train(tiny_checkpoint, tmp_path)
        assert json.loads((tmp_path / "run" / LOCK_FILE).read_text()) == lock  # still the holder's
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is stale, taken over with a notice, and released at the end
    _train(tiny_checkpoint, tmp_path)
    assert not (tmp_path / "run" / LOCK_FILE).exists()


def test_lock_from_another_host_or_live_process_is_not_taken(tmp_path, capsys):
    with RunLock(tmp_path):
        with pytest.raises(bert_tasks.BertTasksError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / LOCK_FILE).exists()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": 0}))
    with pytest.raises(bert_tasks.BertTasksError, match="pid 1 on elsewhere"):
        RunLock(tmp_path).acquire()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": int(dead), "host": socket.gethostname(), "started": 0}))
    with RunLock(tmp_path) as lock:
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid() and lock.held
    assert "taking over the lock of a training that is gone" in capsys.readouterr().err


class Payload:
    """Unpickling this runs ``os.mkdir(marker)``: proof that a file was loaded with pickle."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_resume_never_runs_a_planted_pickle(tmp_path, tiny_checkpoint, capsys):
    _train(tiny_checkpoint, tmp_path, epochs=2)
    run = tmp_path / "run"
    newest = checkpoint_dirs(run)[-1]
    # the old (Accelerate) loop-state file: never opened any more
    marker = tmp_path / "payload-ran"
    torch.save({"state": Payload(marker)}, newest / "custom_checkpoint_0.pkl")
    (newest / "random_states_0.pkl").write_bytes((newest / "custom_checkpoint_0.pkl").read_bytes())
    summary = _train(tiny_checkpoint, tmp_path, epochs=2, resume=True)
    assert summary.steps == 8 and not marker.exists()
    # a crafted optimizer state with a manifest to match: refused in one line, the payload never runs
    torch.save({"state": {0: Payload(marker)}, "param_groups": []}, newest / OPTIMIZER_FILE)
    manifest = json.loads((newest / MANIFEST_FILE).read_text())
    from bert_tasks.atomic_files import sha256_of

    manifest["files"][OPTIMIZER_FILE] = {"bytes": (newest / OPTIMIZER_FILE).stat().st_size, "sha256": sha256_of(newest / OPTIMIZER_FILE)}
    (newest / MANIFEST_FILE).write_text(json.dumps(manifest))
    (run / "summary.json").unlink()
    recipe = tmp_path / "recipe.yaml"
    import yaml

    recipe.write_text(yaml.safe_dump(tiny_recipe(tiny_checkpoint, tmp_path, train={**SHORT, "epochs": 2, "resume": True})))
    capsys.readouterr()
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err
    error = [line for line in err.splitlines() if line.startswith("bert-tasks: error")]
    assert len(error) == 1 and f"{newest / OPTIMIZER_FILE}: refused to load" in error[0] and "Traceback" not in err, err
    assert not marker.exists()


def test_damaged_newest_checkpoint_is_skipped_and_metrics_hold_each_step_once(tmp_path, tiny_checkpoint, capsys):
    _train(tiny_checkpoint, tmp_path / "a", epochs=2)
    run_a, run_b = tmp_path / "a" / "run", tmp_path / "b" / "run"
    assert [p.name for p in checkpoint_dirs(run_a)] == ["step-0000002", "step-0000004", "step-0000006", "step-0000008"]
    shutil.copytree(run_a, run_b)
    for folder in checkpoint_dirs(run_b)[2:]:
        shutil.rmtree(folder)
    (run_b / "summary.json").unlink()
    # step 4 damaged (one byte changed in the weights); step 6 torn (no manifest, half its files)
    weights = checkpoint_dirs(run_b)[-1] / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    torn = run_b / "checkpoints" / "step-0000006"
    shutil.copytree(checkpoint_dirs(run_a)[2], torn)
    (torn / MANIFEST_FILE).unlink()
    (torn / OPTIMIZER_FILE).unlink()
    capsys.readouterr()
    summary = _train(tiny_checkpoint, tmp_path / "b", epochs=2, resume=True)
    notices = [line for line in capsys.readouterr().err.splitlines() if "skipping checkpoint" in line]
    assert len(notices) == 2 and "step-0000006: incomplete" in notices[0] and "model.safetensors does not match its sha256" in notices[1]
    assert summary.steps == 8 and summary.best_step == json.loads((run_a / "summary.json").read_text())["best_step"]
    # metrics.jsonl: the records after step 2 (written by "the killed run") are not doubled, and the
    # resumed run's records are the uninterrupted run's, loss sums included
    assert metric_records(run_b) == metric_records(run_a)
    for name in ("best/model.safetensors", "checkpoints/step-0000008/model.safetensors"):
        a, b = load_file(str(run_a / name)), load_file(str(run_b / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert [p.name for p in checkpoint_dirs(run_b)] == ["step-0000002", "step-0000004", "step-0000006", "step-0000008"]  # damaged ones replaced
    assert not list((run_b / "checkpoints").glob(".*"))



def test_pruning_keeps_the_checkpoint_just_written_over_a_damaged_newer_one(tmp_path):
    """Resumed at step 2 past a damaged step 8 (skipped): with keep_checkpoints=1 the new step 4 stays."""
    from accelerate import Accelerator

    from bert_tasks.checkpointing import Resumable, TrainerState, find_resumable, save_checkpoint

    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    pieces = Resumable(model, optimizer, scheduler, torch.Generator())
    for step in (2, 8):
        save_checkpoint(accelerator, tmp_path, TrainerState(global_step=step), pieces, torch.Generator().get_state(), {}, keep=0)
    damaged = checkpoint_dirs(tmp_path)[-1] / OPTIMIZER_FILE
    damaged.write_bytes(damaged.read_bytes()[:100])
    assert find_resumable(tmp_path).name == "step-0000002"
    save_checkpoint(accelerator, tmp_path, TrainerState(global_step=4), pieces, torch.Generator().get_state(), {}, keep=1)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-0000004"]
    assert find_resumable(tmp_path).name == "step-0000004"
