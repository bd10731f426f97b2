"""Sharded training (FSDP2 through Accelerate) on two CPU processes over gloo: it trains like one
process, saves whole weights in the one-process layout, resumes, and small saves work.

Accelerate enables FSDP only on GPU process groups, so the runs go through tests/fsdp_on_cpu.py,
which makes Accelerate take its FSDP2 branch on CPU (see there); the rest is the production path."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import metric_records, tiny_recipe
from safetensors.torch import load_file

import bert_tasks
from bert_tasks.checkpointing import checkpoint_dirs
from bert_tasks.errors import ConfigError
from bert_tasks.publishing import publish
from bert_tasks.rundir import read_metrics
from bert_tasks.sharding import fit_wrap_classes

DRIVER = Path(__file__).with_name("fsdp_on_cpu.py")
TRAIN = {"epochs": 2, "eval_every": 3, "eval_batch_size": 32, "max_train_samples": 90, "max_eval_samples": 41, "keep_checkpoints": 0}


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _fsdp(path: Path, cwd: Path, *overrides: str, port: int) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
                 str(DRIVER), "train", str(path), *overrides], cwd)


def _recipe(tmp_path: Path, checkpoint: Path, **sections) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(checkpoint, tmp_path / "runs", train=TRAIN, **sections)))
    return path


def _assert_same_layout(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].shape == b[name].shape and a[name].dtype == b[name].dtype, name
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=atol)


def _assert_trained_like_one_process(one: Path, two: Path, published: Path) -> Path:
    """Run ``two`` (2 sharded processes) against ``one`` (1 plain process): the same losses and metrics at
    every evaluation, whole weights in the one-process layout in best/ and the last checkpoint, the same
    predictions from the saved runs, and a publishable folder. Returns ``two``'s last checkpoint."""
    starts = [[e for e in read_metrics(run) if e["event"] == "start"][0] for run in (one, two)]
    assert starts[1]["sharded"] is True and starts[1]["processes"] == 2
    assert starts[1]["trainable_parameters"] == starts[0]["trainable_parameters"]  # counted whole, not per shard
    evals_one = [e for e in read_metrics(one) if e["event"] == "eval"]
    evals_two = [e for e in read_metrics(two) if e["event"] == "eval"]
    assert [e["step"] for e in evals_two] == [e["step"] for e in evals_one] == [3, 6, 9, 12]
    for a, b in zip(evals_one, evals_two):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5) and a["accuracy"] == pytest.approx(b["accuracy"], abs=0.01)
    _assert_same_layout(load_file(str(two / "best" / "model.safetensors")), load_file(str(one / "best" / "model.safetensors")), atol=1e-5)
    last_one, last_two = checkpoint_dirs(one)[-1], checkpoint_dirs(two)[-1]
    _assert_same_layout(load_file(str(last_two / "model.safetensors")), load_file(str(last_one / "model.safetensors")), atol=1e-5)
    texts = ["a fine film", "dull and slow"]  # the saved run loads and predicts in a single process
    assert bert_tasks.load(two).predict(texts) == bert_tasks.load(one).predict(texts)
    publish(two, published)
    assert (published / "model.safetensors").is_file() and (published / "README.md").is_file()
    return last_two


@pytest.mark.slow
def test_fsdp_on_two_processes_trains_and_saves_like_one(tmp_path, tiny_checkpoint_no_dropout):
    path = _recipe(tmp_path, tiny_checkpoint_no_dropout)
    clipped = "train.max_grad_norm=0.01"  # clipping on every step: the norm is taken over every process's shards
    assert _run([sys.executable, "-m", "bert_tasks", "train", str(path), "output.name=one", clipped], tmp_path).returncode == 0
    done = _fsdp(path, tmp_path, "output.name=two", clipped, port=29541)
    assert done.returncode == 0, done.stderr[-3000:]
    last_two = _assert_trained_like_one_process(tmp_path / "runs" / "one", tmp_path / "runs" / "two", tmp_path / "published")
    optimizer = torch.load(last_two / "optimizer.pt", weights_only=True)  # plain tensors and names, no pickled objects
    assert "backbone.encoder.layer.0.attention.self.query.weight" in optimizer["state"]  # keyed by name: any process count loads it


def _assert_resumes_exactly(tmp_path: Path, launch) -> None:
    """``launch(name, *overrides)`` a run "whole", copy it cut back to its first checkpoint (step 3 of 12),
    resume that: the same metric records and a bit-identical best/."""
    done = launch("output.name=whole")
    assert done.returncode == 0, done.stderr[-3000:]
    whole, cut = tmp_path / "runs" / "whole", tmp_path / "runs" / "cut"
    shutil.copytree(whole, cut)
    for folder in checkpoint_dirs(cut)[1:]:
        shutil.rmtree(folder)
    (cut / "summary.json").unlink()
    done = launch("output.name=cut", "train.resume=true")
    assert done.returncode == 0, done.stderr[-3000:]
    assert metric_records(cut) == metric_records(whole)
    a, b = load_file(str(whole / "best" / "model.safetensors")), load_file(str(cut / "best" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_fsdp_run_resumes_to_the_same_weights(tmp_path, tiny_checkpoint):
    """A sharded run cut back to an early checkpoint and resumed sharded ends where it ended."""
    path = _recipe(tmp_path, tiny_checkpoint)
    ports = iter((29542, 29543))
    _assert_resumes_exactly(tmp_path, lambda *overrides: _fsdp(path, tmp_path, *overrides, port=next(ports)))
    # a checkpoint of a sharded run is refused by a launch without sharding, in one line
    refused = _run([sys.executable, "-m", "bert_tasks", "train", str(path), "output.name=cut", "train.resume=true", "train.epochs=3"], tmp_path)
    assert refused.returncode != 0 and "saved by a run with FSDP, this one has no sharding" in refused.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_fsdp_small_save_keeps_only_the_trained_weights(tmp_path, tiny_checkpoint_no_dropout):
    path = _recipe(tmp_path, tiny_checkpoint_no_dropout, strategy={"name": "bottleneck"})
    assert _run([sys.executable, "-m", "bert_tasks", "train", str(path), "output.name=one"], tmp_path).returncode == 0
    done = _fsdp(path, tmp_path, "output.name=two", port=29544)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = tmp_path / "runs" / "one", tmp_path / "runs" / "two"
    _assert_same_layout(load_file(str(two / "best" / "trained.safetensors")), load_file(str(one / "best" / "trained.safetensors")), atol=1e-5)
    assert bert_tasks.load(two).predict(["a fine film"]) == bert_tasks.load(one).predict(["a fine film"])


def test_wrap_classes_are_fitted_to_the_model(tiny_checkpoint):
    """The bundled config names several families' layer classes; Accelerate refuses any the model lacks."""
    from transformers import AutoModel

    model = torch.nn.Module()  # as a TaskModel holds its encoder
    model.encoder = AutoModel.from_pretrained(str(tiny_checkpoint))
    plugin = SimpleNamespace(transformer_cls_names_to_wrap=["BertLayer", "RobertaLayer", "ElectraLayer"])
    fit_wrap_classes(SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin)), model)
    assert plugin.transformer_cls_names_to_wrap == ["BertLayer"]
    plugin.transformer_cls_names_to_wrap = ["RobertaLayer"]
    with pytest.raises(ConfigError, match=r"none of the layer classes to wrap \(RobertaLayer\) is in this model \(this model's layers are BertLayer\)"):
        fit_wrap_classes(SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin)), model)


@pytest.mark.slow
def test_fsdp_with_frozen_layers_runs_them_instead_of_caching(tmp_path, tiny_checkpoint_no_dropout):
    """No process holds a sharded frozen layer whole, so the frozen-states cache steps aside (auto) and says why."""
    path = _recipe(tmp_path, tiny_checkpoint_no_dropout, strategy={"name": "last_n", "n": 1})
    done = _fsdp(path, tmp_path, "output.name=two", "train.epochs=1", port=29545)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "runs" / "two" / "frozen_cache.json").read_text())
    assert not record["cached"] and "sharded over the processes (FSDP)" in record["reason"]


def test_fsdp1_launches_are_refused_in_one_line(monkeypatch):
    from accelerate.utils import DistributedType

    from bert_tasks.runtime import check_distributed_setup

    monkeypatch.setenv("WORLD_SIZE", "2")
    fsdp1 = SimpleNamespace(distributed_type=DistributedType.FSDP, num_processes=2, is_main_process=True,
                            state=SimpleNamespace(fsdp_plugin=SimpleNamespace(fsdp_version=1)))
    with pytest.raises(ConfigError, match="only FSDP2"):
        check_distributed_setup(fsdp1)
