"""`BERT_TASKS_DEEPSPEED=deepspeed_zero2|deepspeed_zero3 python tests/deepspeed_on_cpu.py <bert-tasks arguments>`
under torchrun: bert_tasks with Accelerate's DeepSpeed integration on CPU processes over gloo.

Accelerate takes its DeepSpeed branch only for GPU-like process groups; with CPU processes a DeepSpeed
launch becomes plain data parallel. DeepSpeed itself runs on CPU (its CPU accelerator, gloo for
communication), so this driver makes Accelerate take its DeepSpeed branch there: when bert_tasks
creates its Accelerator, the process group is marked DeepSpeed and the plugin is built from the
bundled launch config named in BERT_TASKS_DEEPSPEED. From then on everything is the real path:
``deepspeed.initialize`` through Accelerate's ``prepare``, ZeRO's partitioned optimiser, bert_tasks'
training loop, gathers, checkpoints and resume.
"""
from __future__ import annotations

import os
import sys
from importlib import resources

import deepspeed.comm
import yaml
from accelerate import Accelerator, DeepSpeedPlugin
from accelerate.state import PartialState
from accelerate.utils import DistributedType

import bert_tasks.runtime as runtime
from bert_tasks.cli import main


def bundled_plugin(name: str) -> DeepSpeedPlugin:
    """The DeepSpeed plugin Accelerate would build from the bundled launch config ``name``."""
    text = resources.files("bert_tasks.launch_configs").joinpath(f"{name}.yaml").read_text()
    return DeepSpeedPlugin(**yaml.safe_load(text)["deepspeed_config"])


def _deepspeed_accelerator(*args, **kwargs) -> Accelerator:
    PartialState(cpu=True)  # the gloo process group torchrun asked for (MULTI_CPU until marked below)
    if not deepspeed.comm.is_initialized():
        deepspeed.comm.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
    PartialState._shared_state["distributed_type"] = DistributedType.DEEPSPEED  # AcceleratorState copies it from here
    kwargs["cpu"] = False  # as on a GPU machine: Accelerate applies a DeepSpeed plugin only without cpu=True (the device is the CPU anyway)
    accelerator = Accelerator(*args, deepspeed_plugin=bundled_plugin(os.environ["BERT_TASKS_DEEPSPEED"]), **kwargs)
    accelerator.state.distributed_type = DistributedType.DEEPSPEED
    return accelerator


runtime.Accelerator = _deepspeed_accelerator

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
