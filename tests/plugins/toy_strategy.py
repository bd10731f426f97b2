"""A strategy defined outside bert_tasks, in this one file: train only the biases (BitFit,
Ben Zaken et al. 2022) and the task's head. A recipe loads it with ``plugins: [plugins.toy_strategy]``."""
from __future__ import annotations

from dataclasses import dataclass

from bert_tasks.model import TaskModel
from bert_tasks.registry import STRATEGIES
from bert_tasks.strategies.base import Strategy


@dataclass(frozen=True)
class BiasOnlyConfig:
    name: str = "bias_only"


@STRATEGIES.register("bias_only", BiasOnlyConfig)
class BiasOnly(Strategy):
    default_learning_rates = (1e-3,)  # one rate: `compare` with no grid runs one cell per seed

    def apply(self, model: TaskModel) -> None:
        for name, parameter in model.backbone.named_parameters():
            parameter.requires_grad_(name.endswith(".bias"))
        model.train_new_parts()
