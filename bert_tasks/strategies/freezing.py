"""Full fine-tuning and tuning only the top N encoder layers.

``last_n`` with n = L (all layers) leaves only the embeddings frozen; n = 0 trains the
head alone: a probe of frozen features (linear when pooling is 'mean'; the [CLS]
pooler counts as part of the head, as in BERT's own classifier).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..backbone import encoder_layers
from ..errors import ConfigError
from ..model import TaskModel
from ..registry import STRATEGIES
from .base import Strategy


@dataclass(frozen=True)
class FullConfig:
    name: str = "full"


@STRATEGIES.register("full", FullConfig)
class Full(Strategy):
    """Every parameter trains."""

    def apply(self, model: TaskModel) -> None:
        for parameter in model.parameters():
            parameter.requires_grad_(True)


@dataclass(frozen=True)
class LastNConfig:
    name: str = "last_n"
    n: int = 2  # encoder layers (counted from the top) that train; 0 = head only

    def validate(self) -> None:
        if self.n < 0:
            raise ConfigError(f"strategy.n: must be 0 or more, got {self.n}")


@STRATEGIES.register("last_n", LastNConfig)
class LastN(Strategy):
    """Freeze the embeddings and the lower layers; the top ``n`` layers and the head train."""

    label_keys = ("n",)

    def apply(self, model: TaskModel) -> None:
        layers = encoder_layers(model.backbone)
        if self.config.n > len(layers):
            raise ConfigError(f"strategy.n={self.config.n}: the encoder has only {len(layers)} layers")
        model.backbone.requires_grad_(False)
        for layer in layers[len(layers) - self.config.n :]:
            layer.requires_grad_(True)
        model.features.requires_grad_(True)
        model.head.requires_grad_(True)
