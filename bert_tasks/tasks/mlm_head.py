"""BERT's masked-LM head, scored only where a token is predicted.

transform (dense -> activation -> LayerNorm) then a decoder onto the vocabulary whose weight is
the input word embeddings (tied, as BERT ties them) plus a bias. The vocabulary projection is
most of a step's arithmetic (30k x hidden per position); with ~15% of positions predicted,
gathering them first skips about 85% of it, and the loss is the same as scoring every position.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.activations import ACT2FN

from ..batching import IGNORE_INDEX


class MaskedLMHead(nn.Module):
    def __init__(self, config: PretrainedConfig, word_embeddings: nn.Embedding):
        super().__init__()
        hidden = config.hidden_size
        self.dense = nn.Linear(hidden, hidden)
        self.activation = ACT2FN[getattr(config, "hidden_act", "gelu")]
        self.layer_norm = nn.LayerNorm(hidden, eps=getattr(config, "layer_norm_eps", 1e-12))
        self.decoder = nn.Linear(hidden, word_embeddings.num_embeddings, bias=False)
        self.decoder.weight = word_embeddings.weight  # tied: one Parameter, trained once
        self.bias = nn.Parameter(torch.zeros(word_embeddings.num_embeddings))

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits for any positions. Shape: (..., hidden) -> (..., vocab)."""
        return self.decoder(self.layer_norm(self.activation(self.dense(hidden)))) + self.bias

    def forward(self, hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss over the predicted positions, their logits and their labels (the sparse head).
        Shape: hidden (batch, seq, hidden), labels (batch, seq) -> loss (), logits (n, vocab), targets (n,)."""
        predicted = labels != IGNORE_INDEX
        # Shape: (n, hidden) where n = predicted positions in the batch
        logits = self.scores(hidden[predicted])
        targets = labels[predicted]
        if targets.numel() == 0:  # nothing masked in this batch: a zero that keeps the graph
            return logits.sum() * 0.0, logits, targets
        return nn.functional.cross_entropy(logits.float(), targets), logits, targets


def dense_loss(head: MaskedLMHead, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The same loss scoring every position (the way a stock BertForMaskedLM does); for checks."""
    # Shape: (batch, seq, vocab) -> (batch * seq, vocab)
    logits = head.scores(hidden)
    return nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)


def tie_check(head: MaskedLMHead, word_embeddings: nn.Embedding) -> Optional[str]:
    """None when the decoder still shares the embedding's storage, else what broke."""
    if head.decoder.weight.data_ptr() != word_embeddings.weight.data_ptr():
        return "the masked-LM decoder is no longer tied to the input word embeddings"
    return None
