"""Sharded training with DeepSpeed ZeRO (stages 2 and 3, through Accelerate) on two CPU processes over
gloo: it trains like one process, saves whole weights in the one-process layout, checkpoints each
process's optimiser partition without pickle, and resumes exactly.

Accelerate enables DeepSpeed only on GPU process groups, so the runs go through
tests/deepspeed_on_cpu.py, which makes Accelerate take its DeepSpeed branch on CPU (see there)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from test_sharded_training import _assert_resumes_exactly, _assert_same_layout, _assert_trained_like_one_process, _recipe, _run

import bert_tasks

from bert_tasks.errors import ConfigError

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
    last_two = _assert_trained_like_one_process(tmp_path / "runs" / "one", tmp_path / "runs" / "two", tmp_path / "published")
    # each process's ZeRO partition in safetensors + JSON; no optimizer.pt, nothing pickled
    assert not (last_two / "optimizer.pt").exists()
    for index in (0, 1):
        partition = load_file(str(last_two / f"optimizer-{index}-of-2.safetensors"))
        assert partition and all(isinstance(t, torch.Tensor) for t in partition.values())
        json.loads((last_two / f"optimizer-{index}-of-2.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("config, other, port", [("deepspeed_zero2", "deepspeed_zero3", 29563), ("deepspeed_zero3", "deepspeed_zero2", 29565)])
def test_deepspeed_run_resumes_to_the_same_weights(tmp_path, tiny_checkpoint, config, other, port):
    """A ZeRO run cut back to an early checkpoint and resumed ends where it ended (dropout on: the
    generators come back too); another stage or no sharding is refused in one line."""
    path = _recipe(tmp_path, tiny_checkpoint)
    ports = iter((port, port + 1))
    _assert_resumes_exactly(tmp_path, lambda *overrides: _deepspeed(config, path, tmp_path, *overrides, port=next(ports)))
    refused = _run([sys.executable, "-m", "bert_tasks", "train", str(path), "output.name=cut", "train.resume=true", "train.epochs=3"], tmp_path)
    assert refused.returncode != 0 and "saved by a run with DeepSpeed ZeRO, this one has no sharding" in refused.stderr.strip().splitlines()[-1]
    refused = _deepspeed(other, path, tmp_path, "output.name=cut", "train.resume=true", "train.epochs=3", port=port + 10)
    assert refused.returncode != 0 and "each process's optimiser partition resumes only in the same layout" in refused.stderr


def test_deepspeed_settings_the_checkpoints_would_not_hold_are_refused_in_one_line(monkeypatch, capsys):
    from accelerate.utils import DistributedType

    from bert_tasks.runtime import check_distributed_setup

    monkeypatch.setenv("WORLD_SIZE", "2")

    def launch(config: dict) -> SimpleNamespace:
        plugin = SimpleNamespace(deepspeed_config=config)
        return SimpleNamespace(distributed_type=DistributedType.DEEPSPEED, num_processes=2, is_main_process=True,
                               state=SimpleNamespace(deepspeed_plugin=plugin))

    check_distributed_setup(launch({"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "none"}}}))
    check_distributed_setup(launch({}))  # a DeepSpeed config of the user's own, without a zero_optimization section
    with pytest.raises(ConfigError, match="offload_optimizer_device=cpu.*offloading is not supported"):
        check_distributed_setup(launch({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}))
    with pytest.raises(ConfigError, match="names an optimizer or scheduler"):
        check_distributed_setup(launch({"zero_optimization": {"stage": 2}, "optimizer": {"type": "Adam"}}))
    # a real DeepSpeed launch (on GPUs) is not told that it runs as plain data parallel
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    check_distributed_setup(launch({"zero_optimization": {"stage": 3}}))
    assert "plain data parallel" not in capsys.readouterr().err


@pytest.mark.slow
def test_deepspeed_zero3_small_save_keeps_only_the_trained_weights(tmp_path, tiny_checkpoint_no_dropout):
    """Adapters under ZeRO-3: the frozen encoder is partitioned too, and trained.safetensors is gathered whole."""
    path = _recipe(tmp_path, tiny_checkpoint_no_dropout, strategy={"name": "bottleneck"})
    assert _run([sys.executable, "-m", "bert_tasks", "train", str(path), "output.name=one"], tmp_path).returncode == 0
    done = _deepspeed("deepspeed_zero3", path, tmp_path, "output.name=two", port=29567)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = tmp_path / "runs" / "one", tmp_path / "runs" / "two"
    _assert_same_layout(load_file(str(two / "best" / "trained.safetensors")), load_file(str(one / "best" / "trained.safetensors")), atol=1e-5)
    assert bert_tasks.load(two).predict(["a fine film"]) == bert_tasks.load(one).predict(["a fine film"])
