"""A DeepSpeed ZeRO optimiser's state, saved per process in safetensors + JSON and read back without pickle.

Under ZeRO each process holds its own partition of the fp32 master weights and of the Adam moments,
and DeepSpeed's own checkpoints store that as pickled Python objects (its loss scaler, enums,
fragment maps), read back with ``torch.load(weights_only=False)``. bert_tasks never unpickles what
it loads, so each process writes its partition itself: every tensor of the optimiser's state dict
into ``optimizer-<i>-of-<n>.safetensors`` (keyed by its path in the dict, as JSON) and every number,
flag and string into ``optimizer-<i>-of-<n>.json``. Objects (the loss scaler) keep only their
numeric attributes. Loading walks the live optimiser's own state dict and fills it from those files,
so the structure comes from the running code and the files supply values (plus the per-parameter
moments, which a fresh optimiser has not created yet): a file that does not fit (another stage,
process count or model) is refused in one line.
"""
from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from . import atomic_files
from .errors import BertTasksError

PLAIN = (bool, int, float, str, type(None))


def file_names(index: int, count: int) -> tuple[str, str]:
    """The tensor file and the JSON file of process ``index`` of ``count``."""
    stem = f"optimizer-{index}-of-{count}"
    return f"{stem}.safetensors", f"{stem}.json"


def save_partition(zero_optimizer: Any, folder: Path, index: int, count: int) -> None:
    """This process's partition of ``zero_optimizer`` (DeepSpeed's ZeRO optimiser) into ``folder``."""
    tensors: dict[str, torch.Tensor] = {}
    values: dict[str, Any] = {}
    _flatten(zero_optimizer.state_dict(), [], tensors, values)
    tensor_name, json_name = file_names(index, count)
    save_file(tensors, str(folder / tensor_name))
    atomic_files.write_json(folder / json_name, values)


def load_partition(zero_optimizer: Any, folder: Path, index: int, count: int) -> None:
    """Restore this process's partition from ``folder`` (the master weights and moments, exactly)."""
    tensor_name, json_name = file_names(index, count)
    source = folder / tensor_name
    if not source.is_file() or not (folder / json_name).is_file():
        raise BertTasksError(f"{folder}: no DeepSpeed optimiser partition for process {index} of {count} ({tensor_name})")
    try:
        tensors, values = load_file(str(source)), json.loads((folder / json_name).read_text())
    except (OSError, ValueError) as error:
        raise BertTasksError(f"{source}: unreadable ({str(error).splitlines()[0][:160]})") from None
    filled = _fill(zero_optimizer.state_dict(), [], tensors, values, source)
    # DeepSpeed takes one state dict per saved process and picks this process's own by its rank
    zero_optimizer.load_state_dict([filled] * count, load_optimizer_states=True, load_from_fp32_weights=True)


def _key(path: list[Any]) -> str:
    return json.dumps(path)


def _flatten(value: Any, path: list[Any], tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
    if isinstance(value, torch.Tensor):
        tensors[_key(path)] = value.detach().to("cpu", copy=True).contiguous()
    elif isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, [*path, key], tensors, values)
    elif isinstance(value, (list, tuple)):
        for position, item in enumerate(value):
            _flatten(item, [*path, position], tensors, values)
    elif isinstance(value, enum.Enum):
        values[_key(path)] = {"enum": value.value}
    elif isinstance(value, PLAIN):
        values[_key(path)] = value
    else:  # an object such as the loss scaler: its numbers and flags are its state
        values[_key(path)] = {"attributes": {k: v for k, v in vars(value).items() if isinstance(v, PLAIN)}}


def _saved_children(path: list[Any], tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> list[Any]:
    """The keys saved directly below ``path``, in saved order."""
    children: dict[Any, None] = {}
    for key in [*tensors, *values]:
        saved = json.loads(key)
        if len(saved) > len(path) and saved[:len(path)] == path:
            children[saved[len(path)]] = None
    return list(children)


def _rebuild(path: list[Any], tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> Any:
    """A saved subtree the live state dict lacks, as nested dicts (how torch optimisers keep per-parameter state)."""
    key = _key(path)
    if key in tensors:
        return tensors[key]
    if key in values:
        return values[key]
    return {child: _rebuild([*path, child], tensors, values) for child in _saved_children(path, tensors, values)}


def _fill(live: Any, path: list[Any], tensors: dict[str, torch.Tensor], values: dict[str, Any], source: Path) -> Any:
    """``live`` (the running optimiser's state dict) with every value taken from the saved files."""
    key = _key(path)
    if isinstance(live, torch.Tensor):
        saved = tensors.get(key)
        if saved is None or saved.shape != live.shape or saved.dtype != live.dtype:
            found = "nothing" if saved is None else f"{saved.dtype} {tuple(saved.shape)}"
            raise BertTasksError(f"{source}: {key} holds {found}, this run's optimiser has {live.dtype} {tuple(live.shape)} "
                                 "(saved with another ZeRO stage, process count or model)")
        return saved.to(live.device)
    if isinstance(live, dict):
        filled = type(live)((k, _fill(v, [*path, k], tensors, values, source)) for k, v in live.items())
        for child in _saved_children(path, tensors, values):  # state the fresh optimiser has not made yet (Adam's moments)
            if child not in filled:
                filled[child] = _rebuild([*path, child], tensors, values)
        return filled
    if isinstance(live, (list, tuple)):
        items = [_fill(v, [*path, i], tensors, values, source) for i, v in enumerate(live)]
        return items if isinstance(live, list) else tuple(items)
    if key not in values:
        raise BertTasksError(f"{source}: no saved value for {key} (saved by another ZeRO stage or DeepSpeed version)")
    saved = values[key]
    if isinstance(live, enum.Enum):
        if saved != {"enum": live.value}:
            raise BertTasksError(f"{source}: saved under {saved}, this run is {live!r}")
        return live
    if isinstance(live, PLAIN):
        return saved
    for name, value in saved.get("attributes", {}).items():
        setattr(live, name, value)
    return live
