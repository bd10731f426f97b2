"""The bundled Accelerate config files: each loads through Accelerate's own config reader, DeepSpeed keys
are DeepSpeedPlugin's, and the CPU data-parallel one trains two processes to one process's numbers."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
import yaml
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DeepSpeedPlugin, DistributedType
from conftest import tiny_recipe
from safetensors.torch import load_file

from bert_tasks.launch_configs import config_path, names
from bert_tasks.rundir import read_metrics

EXPECTED = {"ddp": DistributedType.MULTI_GPU, "ddp_cpu": DistributedType.MULTI_GPU, "fsdp_full_shard": DistributedType.FSDP, "fsdp_shard_grad_op": DistributedType.FSDP,
            "deepspeed_zero2": DistributedType.DEEPSPEED, "deepspeed_zero3": DistributedType.DEEPSPEED}


def test_every_bundled_config_loads_through_accelerate():
    assert names() == sorted(EXPECTED)
    deepspeed_keys = {f.name for f in dataclasses.fields(DeepSpeedPlugin)}
    for name, kind in EXPECTED.items():
        loaded = load_config_from_file(str(config_path(name)))
        assert loaded.distributed_type == kind and loaded.num_processes == 2
        if kind == DistributedType.DEEPSPEED:
            assert set(loaded.deepspeed_config) <= deepspeed_keys  # a misspelt key would be ignored at launch
            assert loaded.deepspeed_config["zero_stage"] == int(name[-1])
        if kind == DistributedType.FSDP:
            assert loaded.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP" and "BertLayer" in loaded.fsdp_config["fsdp_transformer_layer_cls_to_wrap"]
            assert loaded.fsdp_config["fsdp_version"] == 2 and loaded.fsdp_config["fsdp_reshard_after_forward"] == (name == "fsdp_full_shard")


@pytest.mark.slow
@pytest.mark.parametrize("config, port", [("ddp_cpu", 29547), ("fsdp_full_shard", 29548)])
def test_two_cpu_processes_train_like_one_process_and_save_the_same_layout(tmp_path, tiny_checkpoint_no_dropout, config, port):
    """ddp_cpu: data parallel over gloo. fsdp_full_shard on CPUs: Accelerate (1.x) shards only on GPUs and
    runs the processes as plain data parallel (MULTI_CPU), which bert_tasks announces; the training and
    the saved weights are those of one process."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(tiny_checkpoint_no_dropout, tmp_path / "runs", train={"max_eval_samples": 41})))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    errors = {}
    for name, launcher in (("one", [sys.executable, "-m", "bert_tasks"]),
                           ("two", [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_path(config)), "--main_process_port", str(port), "-m", "bert_tasks"])):
        done = subprocess.run([*launcher, "train", str(recipe), f"output.name={name}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        errors[name] = done.stderr
    one, two = ([r for r in read_metrics(tmp_path / "runs" / name) if r["event"] in ("start", "eval")] for name in ("one", "two"))
    assert one[0]["processes"] == 1 and two[0]["processes"] == 2
    assert two[-1]["accuracy"] == pytest.approx(one[-1]["accuracy"], abs=0.03) and two[-1]["loss"] == pytest.approx(one[-1]["loss"], abs=1e-3)
    weights = {name: load_file(str(tmp_path / "runs" / name / "best" / "model.safetensors")) for name in ("one", "two")}
    assert {k: v.shape for k, v in weights["one"].items()} == {k: v.shape for k, v in weights["two"].items()}
    announced = "the launch asks for FSDP, but Accelerate shards models on GPUs only" in errors["two"]
    assert announced == (config == "fsdp_full_shard")
