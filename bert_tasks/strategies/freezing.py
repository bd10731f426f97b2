"""Full fine-tuning and tuning only the top N layers of each stack.

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
    """Every parameter trains (but an encoder the task keeps frozen)."""

    default_learning_rates = (2e-5, 5e-5, 1e-4)  # tuning pretrained weights wants small steps

    def apply(self, model: TaskModel) -> None:
        model.requires_grad_(True)
        model.train_new_parts()


@dataclass(frozen=True)
class LastNConfig:
    name: str = "last_n"
    n: int = 2  # encoder layers (counted from the top) that train; 0 = head only

    def validate(self) -> None:
        if self.n < 0:
            raise ConfigError(f"strategy.n: must be 0 or more, got {self.n}")


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

    def frozen_layers(self, model: TaskModel) -> int:
        return len(encoder_layers(model.encoder)) - self.config.n
