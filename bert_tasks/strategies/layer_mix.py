"""Learned layer weighting (ELMo, Peters et al. 2018): the head sees a mix of every layer.

    mixture = gamma * sum_k softmax(w)_k * h_k

over the embedding output h_0 and each layer's output h_1..h_L, per token, so it serves
sentence, token and span heads alike. The encoder is frozen by default (the ELMo
setting, a probe of what each layer knows); ``encoder: full`` or ``encoder: last_n``
tunes it too. Example::

    bert-tasks train demo strategy.name=layer_mix train.learning_rate=1e-3
    bert-tasks inspect runs/demo-layer_mix      # the learned weight of each layer
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import torch
from torch import nn

from ..backbone import encoder_layers
from ..errors import ConfigError
from ..model import TaskModel
from ..registry import STRATEGIES
from .base import Strategy


@dataclass(frozen=True)
class LayerMixConfig:
    name: str = "layer_mix"
    encoder: Literal["frozen", "full", "last_n"] = "frozen"  # what of the encoder trains beside the mix and the head
    n: Optional[int] = None  # with encoder=last_n: how many top layers train

    def validate(self) -> None:
        if self.encoder == "last_n" and (self.n is None or self.n < 0):
            raise ConfigError("strategy.n: encoder=last_n needs n (the number of top layers that train), e.g. strategy.n=2")
        if self.encoder != "last_n" and self.n is not None:
            raise ConfigError(f"strategy.n: only used with strategy.encoder=last_n (encoder is {self.encoder!r})")


class ScalarMix(nn.Module):
    """``mixture = gamma * sum_k softmax(w)_k * h_k`` over ``count`` hidden-state tensors.

    ``w`` starts at zero (an even mix) and ``gamma`` at one.
    """

    needs_all_layers = True

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count
        self.weights = nn.Parameter(torch.zeros(count))
        self.gamma = nn.Parameter(torch.ones(()))

    def mix(self, hidden_states: tuple[torch.Tensor, ...] | list[torch.Tensor]) -> torch.Tensor:
        if len(hidden_states) != self.count:
            raise ValueError(f"{len(hidden_states)} tensors were passed, but the module mixes {self.count}")
        stacked = torch.stack(list(hidden_states), dim=0)  # Shape: [layers, batch, seq, hidden]
        weights = torch.softmax(self.weights, dim=0).to(stacked.dtype)  # Shape: [layers]
        return self.gamma * torch.einsum("l,lbsh->bsh", weights, stacked)  # Shape: [batch, seq, hidden]

    def forward(self, encoder_outputs: Any) -> torch.Tensor:
        return self.mix(encoder_outputs.hidden_states)

    def layer_weights(self) -> list[float]:
        return torch.softmax(self.weights.detach().float(), dim=0).tolist()


@STRATEGIES.register("layer_mix", LayerMixConfig)
class LayerMix(Strategy):
    small_save = True
    label_keys = ("encoder",)
    default_learning_rates = (3e-4, 1e-3, 3e-3)  # a new mix and head need far higher rates than pretrained weights

    def parameter_group(self, name: str) -> Optional[str]:
        return "layer_mix" if name.startswith("features.") else None

    def apply(self, model: TaskModel) -> None:
        cfg = self.config
        model.features = ScalarMix(len(encoder_layers(model.encoder)) + 1)  # embeddings + every encoder layer
        model.backbone.requires_grad_(False)
        for stack_name, stack in model.tunable_stacks():  # the policy applies to a decoder as well
            layers = encoder_layers(stack)
            if cfg.encoder == "full":
                stack.requires_grad_(True)
            elif cfg.encoder == "last_n":
                if cfg.n > len(layers):
                    raise ConfigError(f"strategy.n={cfg.n}: the {stack_name} has only {len(layers)} layers")
                for layer in layers[len(layers) - cfg.n :]:
                    layer.requires_grad_(True)
        model.train_new_parts()

    def frozen_layers(self, model: TaskModel) -> Optional[int]:
        total = len(encoder_layers(model.encoder))
        return {"frozen": total, "last_n": total - (self.config.n or 0)}.get(self.config.encoder)

    def inspect(self, model: TaskModel) -> dict[str, Any]:
        mix: ScalarMix = model.features
        return {"layer_weights": {("embeddings" if k == 0 else f"layer {k}"): round(w, 4) for k, w in enumerate(mix.layer_weights())}, "gamma": round(float(mix.gamma.detach()), 4)}

    def write_artifacts(self, model: TaskModel, run_dir: Path) -> None:
        """A bar chart of the learned weight of each layer: RUN_DIR/layer_weights.png."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        weights = self.inspect(model)["layer_weights"]
        figure, axes = plt.subplots(figsize=(6, 3.2))
        axes.bar(range(len(weights)), list(weights.values()), color="#4c72b0")
        axes.axhline(1 / len(weights), color="grey", linestyle="--", linewidth=1, label="even mix")
        axes.set_xticks(range(len(weights)), ["emb"] + [str(k) for k in range(1, len(weights))])
        axes.set_xlabel("layer")
        axes.set_ylabel("softmax weight")
        axes.set_title(f"Learned layer weights (gamma = {float(model.features.gamma.detach()):.2f})")
        axes.legend()
        figure.tight_layout()
        figure.savefig(run_dir / "layer_weights.png", dpi=120)
        plt.close(figure)
