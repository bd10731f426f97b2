"""LoRA (Hu et al. 2021) through peft: frozen weights W get a trainable low-rank update
``W + (alpha / r) * B A`` in the target modules (default: attention query and value).
The head trains too. ``merge`` folds the update into W for export. Example::

    bert-tasks train demo strategy.name=lora strategy.r=8 train.learning_rate=1e-3
"""
from __future__ import annotations

from dataclasses import dataclass

import peft
from torch import nn

from ..errors import ConfigError
from ..model import TaskModel
from ..registry import STRATEGIES
from .base import Strategy


@dataclass(frozen=True)
class LoraConfig:
    name: str = "lora"
    r: int = 8  # rank of the update
    alpha: int = 16  # the update is scaled by alpha / r
    dropout: float = 0.1  # dropout on the LoRA branch's input
    target_modules: list[str] = ("query", "value")  # module names (suffixes) that get an update

    def validate(self) -> None:
        if self.r < 1:
            raise ConfigError(f"strategy.r: must be 1 or more, got {self.r}")
        if not self.target_modules:
            raise ConfigError("strategy.target_modules: give at least one module name, e.g. [query, value]")


@STRATEGIES.register("lora", LoraConfig)
class Lora(Strategy):
    small_save = True
    label_keys = ("r",)

    def apply(self, model: TaskModel) -> None:
        cfg = self.config
        lora = peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.target_modules), bias="none")
        model.backbone.requires_grad_(False)
        try:
            peft.inject_adapter_in_model(lora, model.backbone)
        except ValueError as error:
            names = sorted({name.rsplit(".", 1)[-1] for name, m in model.backbone.named_modules() if isinstance(m, nn.Linear)})
            raise ConfigError(
                f"strategy.target_modules={list(cfg.target_modules)}: not found in {type(model.backbone).__name__} "
                f"(its linear layers are named {', '.join(names)}; {str(error).splitlines()[0][:80]})"
            ) from None
        for name, parameter in model.backbone.named_parameters():
            parameter.requires_grad_("lora_" in name)
        model.head.requires_grad_(True)

    def merge(self, model: TaskModel) -> None:
        """Fold every LoRA update into its base weight and remove the LoRA modules."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        for name, module in list(model.backbone.named_modules()):
            if isinstance(module, BaseTunerLayer):
                module.merge()
                parent_name, _, child = name.rpartition(".")
                parent = model.backbone.get_submodule(parent_name) if parent_name else model.backbone
                setattr(parent, child, module.get_base_layer())
