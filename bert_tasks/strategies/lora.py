"""LoRA (Hu et al. 2021) through peft: frozen weights W get a trainable low-rank update
``W + (alpha / r) * B A`` in the target modules (default: attention query and value).
The head trains too. ``merge`` folds the update into W for export. Example::

    bert-tasks train demo strategy.name=lora strategy.r=8 train.learning_rate=1e-3
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import peft
from torch import nn

from ..backbone import encoder_layers, layer_list_owner
from ..errors import ConfigError
from ..ranges import check_range
from ..model import TaskModel
from ..registry import STRATEGIES
from .base import Strategy


@dataclass(frozen=True)
class LoraConfig:
    name: str = "lora"
    r: int = 8  # rank of the update
    alpha: int = 16  # the update is scaled by alpha / r
    dropout: float = 0.1  # dropout on the LoRA branch's input
    # module names (suffixes) that get an update; null: the attention query and value projections
    # under whatever name the architecture uses (query/value, q_proj/v_proj, q/v, q_lin/v_lin)
    target_modules: Optional[list[str]] = None
    last_n: Optional[int] = None  # updates only in the top N layers of each stack (peft's layers_to_transform); null: every layer

    def validate(self) -> None:
        if self.r < 1:
            raise ConfigError(f"strategy.r: must be 1 or more, got {self.r}")
        check_range("strategy.alpha", self.alpha, 0, low_open=True)
        check_range("strategy.dropout", self.dropout, 0, 1, high_open=True)
        if self.target_modules is not None and not self.target_modules:
            raise ConfigError("strategy.target_modules: give at least one module name, e.g. [query, value], or null for the default")
        if self.last_n is not None and self.last_n < 1:
            raise ConfigError(f"strategy.last_n: must be 1 or more (or null for every layer), got {self.last_n}")


QUERY_VALUE_NAMES = (("query", "value"), ("q_proj", "v_proj"), ("q", "v"), ("q_lin", "v_lin"))


def linear_names(stack: nn.Module) -> list[str]:
    return sorted({name.rsplit(".", 1)[-1] for name, module in stack.named_modules() if isinstance(module, nn.Linear)})


def default_targets(stack: nn.Module) -> list[str]:
    """The attention query and value projections of this architecture (Hu et al. adapt W_q and W_v)."""
    present = set(linear_names(stack))
    for names in QUERY_VALUE_NAMES:
        if set(names) <= present:
            return list(names)
    raise ConfigError(f"strategy.target_modules: {type(stack).__name__} has no known query/value projections; name them (its linear layers: {', '.join(sorted(present))})")


@STRATEGIES.register("lora", LoraConfig)
class Lora(Strategy):
    small_save = True
    label_keys = ("r",)
    default_learning_rates = (3e-4, 1e-3, 3e-3)  # new low-rank updates need far higher rates than pretrained weights
    mergeable = True

    def parameter_group(self, name: str) -> Optional[str]:
        return "lora" if "lora_" in name else None

    def apply(self, model: TaskModel) -> None:
        cfg = self.config
        model.backbone.requires_grad_(False)
        for stack_name, stack in model.tunable_stacks():
            targets = list(cfg.target_modules) if cfg.target_modules else default_targets(stack)
            lora = peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets, bias="none", **self._layers(stack_name, stack))
            try:
                peft.inject_adapter_in_model(lora, stack)
            except ValueError as error:
                raise ConfigError(
                    f"strategy.target_modules={targets}: not found in the {stack_name} ({type(stack).__name__}; "
                    f"its linear layers are named {', '.join(linear_names(stack))}; {str(error).splitlines()[0][:80]})"
                ) from None
        for name, parameter in model.backbone.named_parameters():
            if "lora_" in name:
                parameter.requires_grad_(True)
        model.train_new_parts()

    def _layers(self, stack_name: str, stack: nn.Module) -> dict:
        """peft's options limiting the updates to the top ``last_n`` layers of ``stack`` (none: every layer)."""
        if self.config.last_n is None:
            return {}
        total = len(encoder_layers(stack))
        if self.config.last_n > total:
            raise ConfigError(f"strategy.last_n={self.config.last_n}: the {stack_name} has only {total} layers")
        return {"layers_to_transform": list(range(total - self.config.last_n, total)), "layers_pattern": layer_list_owner(stack)[1]}

    def frozen_layers(self, model: TaskModel) -> Optional[int]:
        """With ``last_n``, the layers below the adapted ones are untouched."""
        return None if self.config.last_n is None else len(encoder_layers(model.encoder)) - self.config.last_n

    def merge(self, model: TaskModel) -> None:
        """Fold every LoRA update into its base weight and remove the LoRA modules."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        for name, module in list(model.backbone.named_modules()):
            if isinstance(module, BaseTunerLayer):
                module.merge()
                parent_name, _, child = name.rpartition(".")
                parent = model.backbone.get_submodule(parent_name) if parent_name else model.backbone
                setattr(parent, child, module.get_base_layer())
