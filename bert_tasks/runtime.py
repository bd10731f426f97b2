"""The Accelerator every command uses, configured from the recipe's train section."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import is_mps_available, is_npu_available, is_xpu_available

from .config import TrainConfig
from .errors import ConfigError
from .host_memory import keep_freed_blocks
from .precision import PrecisionChoice, choose_precision


def make_accelerator(train: TrainConfig, run_dir: Optional[Path] = None) -> Accelerator:
    """split_batches: ``train.batch_size`` is the global batch, so N processes give 1 process's numbers."""
    # Several runs in one Python process (the API, comparisons) each get their own precision and
    # accumulation settings; the process group itself (PartialState) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    if train.reuse_host_memory and on_cpu(train):
        keep_freed_blocks()  # ~25% of a small-batch CPU step was page faults on re-allocated buffers
    try:
        return Accelerator(
            cpu=on_cpu(train),  # also lets torchrun on CPU-only machines use gloo
            mixed_precision=precision_choice(train).precision,
            gradient_accumulation_steps=train.gradient_accumulation_steps,
            dataloader_config=DataLoaderConfiguration(split_batches=True, non_blocking=not on_cpu(train) and torch.cuda.is_available()),  # from pinned batches (pins_batches)
            log_with=train.log_with,
            project_dir=str(run_dir) if run_dir else None,
        )
    except (ValueError, ImportError, RuntimeError) as error:
        raise ConfigError(f"train.mixed_precision={train.mixed_precision} / train.log_with={train.log_with}: {str(error).splitlines()[0]}") from None


def check_distributed_setup(accelerator: Accelerator) -> None:
    """Refuse launches bert_tasks would train wrongly, and say when a launch's sharding request cannot apply.

    Accelerate shards (FSDP, DeepSpeed) only on GPUs: on CPUs an FSDP launch becomes plain data parallel
    (MULTI_CPU, every process holding the whole model), which trains correctly, so it is only announced.
    FSDP version 1 is refused (FSDP2 only), and so are DeepSpeed settings whose state bert_tasks' own
    checkpoints would not hold (offloading) or that would override the recipe (an optimizer or scheduler
    in the DeepSpeed config). A launch of N processes that Accelerate set up as N
    unrelated single processes would train N copies into one folder: refused.
    """
    import os

    from accelerate.utils import DistributedType

    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched > 1 and accelerator.num_processes == 1:
        raise ConfigError(f"launched as one of {launched} processes (WORLD_SIZE={launched}) but Accelerate set up a single process "
                          f"({accelerator.distributed_type.value}); on CPUs launch with `bert-tasks launch-config ddp_cpu`")
    sharding = [name for name, flag in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED"))
                if os.environ.get(flag, "false").lower() == "true"]
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        plugin = accelerator.state.deepspeed_plugin
        zero = plugin.deepspeed_config.get("zero_optimization") or {}
        offload = [f"{name}={(zero.get(key) or {}).get('device') or 'none'}"
                   for name, key in (("offload_optimizer_device", "offload_optimizer"), ("offload_param_device", "offload_param"))]
        if any(not item.endswith("=none") for item in offload):
            raise ConfigError(f"DeepSpeed: {', '.join(offload)}: offloading is not supported (its partitions live outside the "
                              "optimiser state bert_tasks checkpoints); set both to none, or use FSDP2's cpu offload")
        if "optimizer" in plugin.deepspeed_config or "scheduler" in plugin.deepspeed_config:
            raise ConfigError("DeepSpeed: the config names an optimizer or scheduler; bert_tasks builds both from the recipe "
                              "(train.learning_rate, train.weight_decay, warmup): remove them from the DeepSpeed config")
    if accelerator.distributed_type == DistributedType.FSDP and accelerator.state.fsdp_plugin.fsdp_version != 2:
        raise ConfigError("FSDP version 1: only FSDP2 is supported (set `fsdp_version: 2` in the Accelerate config, as "
                          "`bert-tasks launch-config fsdp_full_shard` does)")
    if sharding and accelerator.distributed_type not in (DistributedType.FSDP, DistributedType.DEEPSPEED) and accelerator.is_main_process:
        import sys

        print(f"bert-tasks: the launch asks for {sharding[0]}, but Accelerate shards models on GPUs only; these "
              f"{accelerator.num_processes} processes train as plain data parallel ({accelerator.distributed_type.value}), each holding the whole model",
              file=sys.stderr, flush=True)


def on_cpu(train: TrainConfig) -> bool:
    return train.cpu or not has_accelerator_device()


def precision_choice(train: TrainConfig) -> PrecisionChoice:
    """What ``train.mixed_precision`` means on the device this process will run on (``auto`` resolved)."""
    if on_cpu(train):
        device_type = "cpu"
    else:
        device_type = "cuda" if torch.cuda.is_available() else "other accelerator"
    return choose_precision(train.mixed_precision, device_type)


def has_accelerator_device() -> bool:
    return torch.cuda.is_available() or is_mps_available() or is_xpu_available() or is_npu_available()


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far: allocated CUDA memory on a GPU, else the resident set
    (what the operating system had to give the whole process: weights, optimiser state, activations, data)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def same_on_every_process(accelerator: Accelerator, value: int) -> int:
    """The main process's ``value`` on every process (a one-number broadcast: no pickling)."""
    if accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast

    tensor = torch.tensor([value], dtype=torch.long, device=accelerator.device)  # Shape: [1]
    return int(broadcast(tensor, from_process=0).item())
