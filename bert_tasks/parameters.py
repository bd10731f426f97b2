"""Where a model's parameters are and which of them train: total, trainable, %, by group."""
from __future__ import annotations

import hashlib
import re
from collections import OrderedDict

import torch
from torch import nn

LAYER = re.compile(r"\.(?:layer|layers|block)\.(\d+)\.")
DECODER = re.compile(r"^backbone\.(?:model\.)?decoder\.")


def group_of(name: str) -> str:
    """Where a parameter of the network sits: 'backbone.encoder.layer.3.attention...' -> 'layer 3';
    a seq2seq decoder's parts get 'decoder ' groups; the task's head is 'head'. (What a strategy
    adds is grouped by the strategy: ``Strategy.parameter_group``.)"""
    if DECODER.match(name):
        return "decoder " + _stack_group(name)
    if name.startswith("head."):
        return "head"
    return _stack_group(name)


def _stack_group(name: str) -> str:
    match = LAYER.search(name)
    if match:
        return f"layer {match.group(1)}"
    if ".embeddings." in name or name.startswith("backbone.embeddings") or "embed_" in name or ".shared." in name:
        return "embeddings"
    return "other"


def parameter_report(model: nn.Module) -> dict:
    """{'total', 'trainable', 'trainable_percent', 'groups': {group: {'total', 'trainable'}}}; a
    TaskModel's strategy names the groups of what it added (adapters, LoRA, ...)."""
    added_group = getattr(model, "added_group", None) or (lambda name: None)
    groups: "OrderedDict[str, dict[str, int]]" = OrderedDict()
    for name, parameter in model.named_parameters():
        entry = groups.setdefault(added_group(name) or group_of(name), {"total": 0, "trainable": 0})
        count = getattr(parameter, "ds_numel", None) or parameter.numel()  # DeepSpeed ZeRO-3 leaves an empty shell in place
        entry["total"] += count
        if parameter.requires_grad:
            entry["trainable"] += count
    total = sum(g["total"] for g in groups.values())
    trainable = sum(g["trainable"] for g in groups.values())
    return {"total": total, "trainable": trainable, "trainable_percent": round(100 * trainable / max(total, 1), 4), "groups": dict(groups)}


def format_report(report: dict) -> str:
    width = max(12, *(len(group) + 2 for group in report["groups"]))
    lines = [f"{'group':<{width}}{'parameters':>13}{'trainable':>13}"]
    for group, entry in report["groups"].items():
        lines.append(f"{group:<{width}}{entry['total']:>13,}{entry['trainable']:>13,}")
    lines.append(f"{'total':<{width}}{report['total']:>13,}{report['trainable']:>13,}  ({report['trainable_percent']:.2f}% trainable)")
    return "\n".join(lines)


def weights_hash(module: nn.Module, exclude: frozenset[str] | set[str] = frozenset()) -> str:
    """sha256 over parameter names and values: identifies the exact base weights a small save builds on
    (``exclude``: freshly initialised parameters, which the save holds itself)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        if name in exclude:
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()
