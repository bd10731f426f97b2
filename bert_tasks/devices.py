"""Where prediction and evaluation run: ``--device auto|cpu|cuda|cuda:N|mps``, checked to exist.

Tensors follow the model: ``move_to(batch, model_device(model))`` puts every tensor of a batch
on the device the model's own weights are on, so the two can never disagree."""
from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from .errors import ConfigError

DEVICE_NAME = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d+))?$")


def resolve_device(name: str = "auto") -> torch.device:
    """'auto': the first GPU when there is one (CUDA, then Apple MPS), else the CPU; other names must exist here."""
    match = DEVICE_NAME.match(str(name).strip().lower())
    if not match or (match.group(2) is not None and match.group(1) != "cuda"):
        raise ConfigError(f"--device={name!r}: expected auto, cpu, cuda, cuda:N or mps")
    kind, index = match.group(1), match.group(2)
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"--device={name}: no CUDA GPU is available here (use --device cpu or auto)")
        number = int(index) if index is not None else torch.cuda.current_device()
        if number >= count:
            raise ConfigError(f"--device={name}: this machine has {count} CUDA GPU(s), numbered 0 to {count - 1}")
        return torch.device("cuda", number)
    if kind == "mps" and not _mps_available():
        raise ConfigError(f"--device={name}: Apple MPS is not available here (use --device cpu or auto)")
    return torch.device(kind)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (a model lives on one device here)."""
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def pins_batches(device: torch.device) -> bool:
    """Whether loaders for ``device`` should build batches in page-locked memory: only for CUDA, where
    that makes the host-to-device copy asynchronous (pinning costs time and is unsupported elsewhere)."""
    return device.type == "cuda"


def move_to(value: Any, device: torch.device) -> Any:
    """Every tensor inside ``value`` (nested dicts, lists, tuples) on ``device``; other values as they are."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=device.type == "cuda")
    if isinstance(value, dict):
        return {key: move_to(item, device) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(move_to(item, device) for item in value)
    return value
