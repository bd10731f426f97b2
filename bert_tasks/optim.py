"""AdamW with weight decay on weight matrices only (not biases, not LayerNorm), as in BERT."""
from __future__ import annotations

import torch
from torch import nn

from .config import TrainConfig

NORM_TYPES = (nn.LayerNorm,)


def no_decay_names(model: nn.Module) -> set[str]:
    """Names of parameters that get no weight decay: every bias and every normalisation weight."""
    names = set()
    for module_name, module in model.named_modules():
        is_norm = isinstance(module, NORM_TYPES) or "norm" in type(module).__name__.lower()
        for param_name, _ in module.named_parameters(recurse=False):
            if is_norm or param_name == "bias":
                names.add(f"{module_name}.{param_name}" if module_name else param_name)
    return names


def make_optimizer(model: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; a model may scale its encoder's rate (``encoder_lr_scale``,
    e.g. a pretrained encoder under a decoder that starts from scratch)."""
    skip = no_decay_names(model)
    scale = float(getattr(model, "encoder_lr_scale", 1.0))
    scaled = {id(p) for p in model.encoder.parameters()} if scale != 1.0 else set()
    groups_by_key: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            groups_by_key.setdefault((name in skip, id(parameter) in scaled), []).append(parameter)
    groups = [
        {"params": params, "weight_decay": 0.0 if no_decay else train.weight_decay, "lr": train.learning_rate * (scale if encoder else 1.0)}
        for (no_decay, encoder), params in sorted(groups_by_key.items())
    ]
    # The fused kernel is ~5x faster on CPU (the 12M-row embedding dominates an unfused step).
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for group in groups for p in group["params"])
    return torch.optim.AdamW(groups, lr=train.learning_rate, eps=train.adam_epsilon, fused=fused or None)
