"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021).

A small residual MLP after a sublayer's output projection: ``h + up(act(down(h)))``,
with ``up`` starting at zero so an untrained adapter is the identity. Houlsby places one
after the attention output and one after the feed-forward block of every layer;
Pfeiffer only after the feed-forward block. Only adapters, the head and (optionally)
the LayerNorms train. Example::

    bert-tasks train demo strategy.name=bottleneck strategy.reduction_factor=16 train.learning_rate=1e-3
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torch import nn

from ..backbone import encoder_layers, find_submodule
from ..errors import CheckpointError, ConfigError
from ..ranges import check_range
from ..model import TaskModel
from ..registry import STRATEGIES
from .base import Strategy

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "swish": nn.SiLU}
# Output projections, by architecture family: BERT / RoBERTa / ELECTRA, DistilBERT, BART, T5
# (T5 decoder blocks hold cross-attention as layer.1, so their feed-forward is layer.2).
ATTENTION_OUTPUT = ("attention.output.dense", "attention.out_lin", "self_attn.out_proj", "layer.0.SelfAttention.o")
FEED_FORWARD_OUTPUT = ("output.dense", "ffn.lin2", "fc2", "layer.2.DenseReluDense.wo", "layer.1.DenseReluDense.wo")


@dataclass(frozen=True)
class BottleneckConfig:
    name: str = "bottleneck"
    placement: Literal["houlsby", "pfeiffer"] = "houlsby"  # houlsby: after attention and feed-forward; pfeiffer: feed-forward only
    reduction_factor: int = 16  # bottleneck size = hidden size / reduction_factor
    bottleneck_size: Optional[int] = None  # set to fix the size directly (overrides reduction_factor)
    activation: Literal["relu", "gelu", "tanh", "swish"] = "relu"
    init_std: float = 1e-3  # std of the down-projection; the up-projection starts at 0 (identity)
    train_layernorm: bool = True  # Houlsby et al. train the LayerNorms of adapted layers too
    last_n: Optional[int] = None  # adapters only in the top N layers (the lower ones stay untouched)

    def validate(self) -> None:
        if self.reduction_factor < 1:
            raise ConfigError(f"strategy.reduction_factor: must be 1 or more, got {self.reduction_factor}")
        if self.bottleneck_size is not None and self.bottleneck_size < 1:
            raise ConfigError(f"strategy.bottleneck_size: must be 1 or more, got {self.bottleneck_size}")
        check_range("strategy.init_std", self.init_std, 0, low_open=True, hint="a zero down-projection never learns")
        if self.last_n is not None and self.last_n < 1:
            raise ConfigError(f"strategy.last_n: must be 1 or more (or null for every layer), got {self.last_n}")


class BottleneckAdapter(nn.Module):
    """``h + up(act(down(h)))``: down [hidden -> size], up [size -> hidden]."""

    def __init__(self, hidden_size: int, size: int, activation: str, init_std: float) -> None:
        super().__init__()
        self.down = nn.Linear(hidden_size, size)
        self.activation = ACTIVATIONS[activation]()
        self.up = nn.Linear(size, hidden_size)
        nn.init.normal_(self.down.weight, std=init_std)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # Shape: hidden [batch, seq, hidden_size] -> same
        return hidden + self.up(self.activation(self.down(hidden)))


def _adapt_output(module: nn.Module, adapter: BottleneckAdapter) -> None:
    """Run ``adapter`` on ``module``'s output (a hook keeps the encoder's own parameter names)."""
    module.register_forward_hook(lambda _module, _inputs, output: adapter(output))


@STRATEGIES.register("bottleneck", BottleneckConfig)
class Bottleneck(Strategy):
    small_save = True
    label_keys = ("placement", "reduction_factor")
    default_learning_rates = (3e-4, 1e-3, 3e-3)  # new modules need far higher rates than pretrained weights

    def parameter_group(self, name: str) -> Optional[str]:
        return "adapters" if name.startswith("adapters.") else None

    def describe(self) -> str:
        label = super().describe()
        if self.config.bottleneck_size is not None:  # the size is given directly: the factor means nothing
            label = label.replace(f"reduction_factor={self.config.reduction_factor},", "")
        return label

    def apply(self, model: TaskModel) -> None:
        model.backbone.requires_grad_(False)
        adapters = nn.ModuleDict()
        for stack_name, stack in model.tunable_stacks():
            self._adapt_stack(stack_name, stack, adapters)
        model.add_module("adapters", adapters)
        model.train_new_parts()

    def frozen_layers(self, model: TaskModel) -> Optional[int]:
        """With ``last_n``, the layers below the adapted ones are untouched."""
        return None if self.config.last_n is None else len(encoder_layers(model.encoder)) - self.config.last_n

    def _adapt_stack(self, stack_name: str, stack: nn.Module, adapters: nn.ModuleDict) -> None:
        """Adapters in the (top ``last_n``) layers of one stack, named ``layer{i}_{site}`` for the
        encoder and ``decoder_layer{i}_{site}`` for a decoder."""
        cfg = self.config
        layers = encoder_layers(stack)
        count = len(layers) if cfg.last_n is None else cfg.last_n
        if count > len(layers):
            raise ConfigError(f"strategy.last_n={count}: the {stack_name} has only {len(layers)} layers")
        hidden = stack.config.hidden_size
        size = cfg.bottleneck_size or max(1, hidden // cfg.reduction_factor)
        prefix = "" if stack_name == "encoder" else f"{stack_name}_"
        sites = [("ffn", FEED_FORWARD_OUTPUT)] + ([("attention", ATTENTION_OUTPUT)] if cfg.placement == "houlsby" else [])
        for index in range(len(layers) - count, len(layers)):
            layer = layers[index]
            for site, candidates in sites:
                target = find_submodule(layer, candidates)
                if target is None:
                    raise CheckpointError(
                        f"strategy bottleneck: {type(stack).__name__} layers have no {site} output projection "
                        f"(looked for {', '.join(candidates)}); supported: BERT, RoBERTa, ELECTRA, DistilBERT, BART, T5-style stacks"
                    )
                adapter = BottleneckAdapter(hidden, size, cfg.activation, cfg.init_std)
                adapters[f"{prefix}layer{index}_{site}"] = adapter
                _adapt_output(target, adapter)
            if cfg.train_layernorm:
                for module in layer.modules():
                    if isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("LayerNorm"):
                        module.requires_grad_(True)
