"""Full fine-tuning and tuning only the top N layers of each stack.

``last_n`` with n = L (all layers) leaves only the embeddings frozen; n = 0 trains the
head alone: a probe of frozen features (linear when pooling is 'mean'; the [CLS]
pooler counts as part of the head, as in BERT's own classifier).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ..backbone import encoder_layers
from ..errors import ConfigError
from ..model import TaskModel
from ..registry import STRATEGIES
from .base import Strategy


def check_reinit_top(reinit_top: int, limit: Optional[int] = None, limit_key: str = "") -> None:
    if reinit_top < 0:
        raise ConfigError(f"strategy.reinit_top: must be 0 or more, got {reinit_top}")
    if limit is not None and reinit_top > limit:
        raise ConfigError(f"strategy.reinit_top={reinit_top}: only the {limit} layers that train ({limit_key}) can start afresh")


def reinit_top_layers(model: TaskModel, count: int) -> None:
    """Draw the top ``count`` encoder layers afresh, as BERT initialises them (linear weights ~ N(0,
    initializer_range), biases 0, LayerNorm 1 and 0): the top layers of a pretrained encoder are the
    most specific to its pretraining task, and starting them anew helps small fine-tuning sets
    (Zhang et al. 2021, "Revisiting Few-sample BERT Fine-tuning"). Seeded by train.seed."""
    if count == 0:
        return
    layers = encoder_layers(model.encoder)
    if count > len(layers):
        raise ConfigError(f"strategy.reinit_top={count}: the encoder has only {len(layers)} layers")
    std = float(getattr(model.encoder.config, "initializer_range", 0.02))
    with torch.no_grad():
        for layer in layers[len(layers) - count :]:
            for module in layer.modules():
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, mean=0.0, std=std)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
                elif isinstance(module, nn.LayerNorm) or "layernorm" in type(module).__name__.lower():
                    if getattr(module, "weight", None) is not None:
                        nn.init.ones_(module.weight)
                    if getattr(module, "bias", None) is not None:
                        nn.init.zeros_(module.bias)


@dataclass(frozen=True)
class FullConfig:
    name: str = "full"
    reinit_top: int = 0  # encoder layers (from the top) drawn afresh before training

    def validate(self) -> None:
        check_reinit_top(self.reinit_top)


@STRATEGIES.register("full", FullConfig)
class Full(Strategy):
    """Every parameter trains (but an encoder the task keeps frozen)."""

    default_learning_rates = (2e-5, 5e-5, 1e-4)  # tuning pretrained weights wants small steps

    def apply(self, model: TaskModel) -> None:
        model.requires_grad_(True)
        model.train_new_parts()
        reinit_top_layers(model, self.config.reinit_top)


@dataclass(frozen=True)
class LastNConfig:
    name: str = "last_n"
    n: int = 2  # encoder layers (counted from the top) that train; 0 = head only
    reinit_top: int = 0  # of those, the top layers drawn afresh before training (at most n)

    def validate(self) -> None:
        if self.n < 0:
            raise ConfigError(f"strategy.n: must be 0 or more, got {self.n}")
        check_reinit_top(self.reinit_top, self.n, f"strategy.n={self.n}")


@STRATEGIES.register("last_n", LastNConfig)
class LastN(Strategy):
    """Freeze the embeddings and the lower layers; the top ``n`` layers (of the encoder, and of
    the decoder of a seq2seq model) and the head train."""

    label_keys = ("n",)
    default_learning_rates = (5e-5, 1e-4, 3e-4)

    def apply(self, model: TaskModel) -> None:
        model.backbone.requires_grad_(False)
        for name, stack in model.tunable_stacks():
            layers = encoder_layers(stack)
            if self.config.n > len(layers):
                raise ConfigError(f"strategy.n={self.config.n}: the {name} has only {len(layers)} layers")
            for layer in layers[len(layers) - self.config.n :]:
                layer.requires_grad_(True)
        model.train_new_parts()
        reinit_top_layers(model, self.config.reinit_top)

    def frozen_layers(self, model: TaskModel) -> int:
        return len(encoder_layers(model.encoder)) - self.config.n
