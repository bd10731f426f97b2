"""Accelerate config files for `accelerate launch --config_file ... -m bert_tasks train RECIPE`: data parallel
on GPUs (ddp) or CPU processes (ddp_cpu), sharded with FSDP2 (fsdp_full_shard, fsdp_shard_grad_op), DeepSpeed ZeRO-2 / ZeRO-3
(deepspeed_zero2, deepspeed_zero3; needs the `deepspeed` extra).
Package data, so an installed bert_tasks has them: ``bert-tasks launch-config fsdp_full_shard`` prints the path."""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError

FOLDER = Path(__file__).resolve().parent


def names() -> list[str]:
    return sorted(p.stem for p in FOLDER.glob("*.yaml"))


def config_path(name: str) -> Path:
    """The bundled Accelerate config ``name`` (e.g. 'ddp', 'fsdp_full_shard', 'deepspeed_zero3')."""
    path = FOLDER / f"{name.removesuffix('.yaml')}.yaml"
    if not path.is_file():
        raise ConfigError(f"launch config {name!r}: bundled are {', '.join(names())}")
    return path
