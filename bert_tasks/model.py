"""TaskModel = encoder (backbone) + what the head sees (features) + the task's head."""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn


class LastHiddenState(nn.Module):
    """Default features: the top layer's token vectors. Strategies may swap in another
    module (e.g. a learned mix of all layers) that reads ``hidden_states``."""

    needs_all_layers = False

    def forward(self, encoder_outputs: Any) -> torch.Tensor:
        return encoder_outputs.last_hidden_state  # Shape: [batch, seq, hidden]


class TaskModel(nn.Module):
    """The one model class every task and strategy share.

    ``backbone`` is an ``AutoModel`` encoder (its pooler, if any, now lives in the
    head), ``features`` maps encoder outputs to per-token vectors, and ``head`` maps
    those to task outputs (logits).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, features: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.features = features if features is not None else LastHiddenState()
        self.head = head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        # Shape: input_ids, attention_mask, token_type_ids: [batch, seq]
        outputs = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=getattr(self.features, "needs_all_layers", False),
            return_dict=True,
            **inputs,
        )
        hidden = self.features(outputs)  # Shape: [batch, seq, hidden]
        return self.head(hidden, attention_mask)
