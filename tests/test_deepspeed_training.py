"""Sharded training with DeepSpeed ZeRO (stages 2 and 3, through Accelerate) on two CPU processes over
gloo: it trains like one process, saves whole weights in the one-process layout, checkpoints each
process's optimiser partition without pickle, and resumes exactly.

Accelerate enables DeepSpeed only on GPU process groups, so the runs go through
tests/deepspeed_on_cpu.py, which makes Accelerate take its DeepSpeed branch on CPU (see there)."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import metric_records
from safetensors.torch import load_file
from test_sharded_training import _assert_same_layout, _recipe, _run

import bert_tasks
from bert_tasks.checkpointing import checkpoint_dirs
from bert_tasks.errors import ConfigError
from bert_tasks.publishing import publish
from bert_tasks.rundir import read_metrics

pytest.importorskip("deepspeed")
DRIVER = Path(__file__).with_name("deepspeed_on_cpu.py")


def _deepspeed(config: str, path: Path, cwd: Path, *overrides: str, port: int):
    os.environ["BERT_TASKS_DEEPSPEED"] = config  # _run passes the environment on
    try:
        return _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
                     str(DRIVER), "train", str(path), *overrides], cwd)
    finally:
        del os.environ["BERT_TASKS_DEEPSPEED"]


@pytest.mark.slow
@pytest.mark.parametrize("config, port", [("deepspeed_zero2", 29561), ("deepspeed_zero3", 29562)])
def test_deepspeed_on_two_processes_trains_and_saves_like_one(tmp_path, tiny_checkpoint_no_dropout, config, port):
    path = _recipe(tmp_path, tiny_checkpoint_no_dropout)
    clipped = "train.max_grad_norm=0.01"  # clipping on every step, inside DeepSpeed's step, over both partitions
    assert _run([sys.executable, "-m", "bert_tasks", "train", str(path), "output.name=one", clipped], tmp_path).returncode == 0
    done = _deepspeed(config, path, tmp_path, "output.name=two", clipped, port=port)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = tmp_path / "runs" / "one", tmp_path / "runs" / "two"
    start = [e for e in read_metrics(two) if e["event"] == "start"][0]
    assert start["sharded"] is True and start["processes"] == 2
    assert start["trainable_parameters"] == [e for e in read_metrics(one) if e["event"] == "start"][0]["trainable_parameters"]
    evals_one = [e for e in read_metrics(one) if e["event"] == "eval"]
    evals_two = [e for e in read_metrics(two) if e["event"] == "eval"]
    assert [e["step"] for e in evals_two] == [e["step"] for e in evals_one] == [3, 6, 9, 12]
    for a, b in zip(evals_one, evals_two):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5) and a["accuracy"] == pytest.approx(b["accuracy"], abs=0.01)
    _assert_same_layout(load_file(str(two / "best" / "model.safetensors")), load_file(str(one / "best" / "model.safetensors")), atol=1e-5)
    last_one, last_two = checkpoint_dirs(one)[-1], checkpoint_dirs(two)[-1]
    _assert_same_layout(load_file(str(last_two / "model.safetensors")), load_file(str(last_one / "model.safetensors")), atol=1e-5)
    # each process's ZeRO partition in safetensors + JSON; no optimizer.pt, nothing pickled
    assert not (last_two / "optimizer.pt").exists()
    for index in (0, 1):
        partition = load_file(str(last_two / f"optimizer-{index}-of-2.safetensors"))
        assert partition and all(isinstance(t, torch.Tensor) for t in partition.values())
        json.loads((last_two / f"optimizer-{index}-of-2.json").read_text())
    texts = ["a fine film", "dull and slow"]
    assert bert_tasks.load(two).predict(texts) == bert_tasks.load(one).predict(texts)
    publish(two, tmp_path / "published")
    assert (tmp_path / "published" / "model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("config, other, port", [("deepspeed_zero2", "deepspeed_zero3", 29563), ("deepspeed_zero3", "deepspeed_zero2", 29565)])
def test_deepspeed_run_resumes_to_the_same_weights(tmp_path, tiny_checkpoint, config, other, port):
    """A ZeRO run cut back to an early checkpoint and resumed ends where it ended (dropout on: the
    generators come back too); another stage or no sharding is refused in one line."""
    path = _recipe(tmp_path, tiny_checkpoint)
    done = _deepspeed(config, path, tmp_path, "output.name=whole", port=port)
    assert done.returncode == 0, done.stderr[-3000:]
    whole, cut = tmp_path / "runs" / "whole", tmp_path / "runs" / "cut"
    shutil.copytree(whole, cut)
    for folder in checkpoint_dirs(cut)[1:]:  # keep step 3 of 12
        shutil.rmtree(folder)
    (cut / "summary.json").unlink()
    done = _deepspeed(config, path, tmp_path, "output.name=cut", "train.resume=true", port=port + 1)
    assert done.returncode == 0, done.stderr[-3000:]
    assert metric_records(cut) == metric_records(whole)
    a, b = load_file(str(whole / "best" / "model.safetensors")), load_file(str(cut / "best" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    refused = _run([sys.executable, "-m", "bert_tasks", "train", str(path), "output.name=cut", "train.resume=true", "train.epochs=3"], tmp_path)
    assert refused.returncode != 0 and "saved by a run with DeepSpeed ZeRO, this one has no sharding" in refused.stderr.strip().splitlines()[-1]
    refused = _deepspeed(other, path, tmp_path, "output.name=cut", "train.resume=true", "train.epochs=3", port=port + 10)
    assert refused.returncode != 0 and "each process's optimiser partition resumes only in the same layout" in refused.stderr


def test_deepspeed_settings_the_checkpoints_would_not_hold_are_refused_in_one_line(monkeypatch):
    from accelerate.utils import DistributedType

    from bert_tasks.runtime import check_distributed_setup

    monkeypatch.setenv("WORLD_SIZE", "2")

    def launch(config: dict) -> SimpleNamespace:
        plugin = SimpleNamespace(deepspeed_config=config)
        return SimpleNamespace(distributed_type=DistributedType.DEEPSPEED, num_processes=2, is_main_process=True,
                               state=SimpleNamespace(deepspeed_plugin=plugin))

    check_distributed_setup(launch({"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "none"}}}))
    with pytest.raises(ConfigError, match="offload_optimizer_device=cpu.*offloading is not supported"):
        check_distributed_setup(launch({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}))
    with pytest.raises(ConfigError, match="names an optimizer or scheduler"):
        check_distributed_setup(launch({"zero_optimization": {"stage": 2}, "optimizer": {"type": "Adam"}}))
