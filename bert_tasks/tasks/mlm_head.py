"""The pretraining head: the checkpoint's own masked-LM head (and sentence head), scored only where a token is predicted.

The network is the stock transformers class with those heads (``BertForPreTraining``,
``...ForMaskedLM``), loaded from the checkpoint: a checkpoint that has an MLM head keeps it;
one without (like a sentence-embedding encoder) gets the class's new head, whose decoder
transformers ties to the input word embeddings (one Parameter, as BERT ties them). The
vocabulary projection is most of a step's arithmetic (vocab x hidden per position); with ~15%
of positions predicted, gathering them first skips about 85% of it for the same loss.

Per row the head returns ``[summed NLL, predicted tokens, correct tokens, sentence logits...]``, so
a batch's rows can be sliced (the last short batch across processes) and evaluation sums are exact.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForMaskedLM, AutoModelForPreTraining, PretrainedConfig, PreTrainedModel

from ..backbone import checkpoint_error, load_backbone_config, quiet_loading, resolve_checkpoint, run_folder
from ..batching import IGNORE_INDEX
from ..errors import ConfigError

# Where families keep the masked-LM head (callable on token vectors) and the sentence head (on the pooled [CLS]).
LM_HEAD_PATHS = ("cls.predictions", "lm_head", "predictions")  # BERT / RoBERTa, XLM-R / ALBERT
SENTENCE_HEAD_PATHS = ("cls.seq_relationship", "sop_classifier")  # BERT's NSP / ALBERT's SOP
STATS = 3  # summed NLL, predicted tokens, correct tokens


def load_pretraining_network(checkpoint: str, revision: Optional[str], dropout: Optional[float], network_config: Optional[PretrainedConfig] = None) -> PreTrainedModel:
    """The checkpoint in its pretraining class (keeps the pooler and sentence head where the family has
    them), else its masked-LM class. With ``network_config`` the same class is built empty."""
    if network_config is None and run_folder(checkpoint) is not None:
        raise ConfigError(f"model.checkpoint={checkpoint!r}: continuing pretraining from a run: publish it first (bert-tasks publish RUN OUT) and give model.checkpoint=OUT")
    config = network_config if network_config is not None else load_backbone_config(checkpoint, revision, dropout)
    for auto in (AutoModelForPreTraining, AutoModelForMaskedLM):
        if type(config) not in auto._model_mapping:
            continue
        with quiet_loading():
            if network_config is not None:
                return auto.from_config(config)
            try:
                return auto.from_pretrained(resolve_checkpoint(checkpoint), config=config, revision=revision)
            except (OSError, ValueError) as error:
                raise checkpoint_error(checkpoint, error) from None
    raise ConfigError(f"model.checkpoint={checkpoint!r}: {config.model_type} has no masked-LM class in transformers, so task mlm cannot train it")


def find_path(network: nn.Module, paths: tuple[str, ...]) -> Optional[str]:
    for path in paths:
        try:
            network.get_submodule(path)
            return path
        except AttributeError:
            continue
    return None


class PretrainingHead(nn.Module):
    """The network's head modules (under their own names, so a stock class takes the weights back as they are)
    plus the pooler; called as ``head(hidden, attention_mask, mlm_labels)``."""

    input_names = ("mlm_labels",)

    def __init__(self, parts: dict[str, nn.Module], lm_path: str, sentence_path: Optional[str], pooler: Optional[nn.Module]) -> None:
        super().__init__()
        for name, module in parts.items():
            self.add_module(name, module)
        self.lm_path, self.sentence_path = lm_path, sentence_path
        self.pooler = pooler

    def frozen_modules(self) -> list[nn.Module]:
        """Parts that ride along unchanged: without a sentence objective the pooler gets no gradient, and it
        stays the checkpoint's so fine-tuning from the result starts from it."""
        return [self.pooler] if self.pooler is not None and self.sentence_path is None else []

    def vocabulary_scores(self, vectors: torch.Tensor) -> torch.Tensor:
        """Shape: (n, hidden) -> (n, vocab)"""
        return self.get_submodule(self.lm_path)(vectors)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor, mlm_labels: torch.Tensor) -> torch.Tensor:
        # Shape: hidden (batch, seq, hidden), mlm_labels (batch, seq) -> (batch, STATS [+ 2])
        # One host sync per step (nonzero must learn n); the gathers below reuse its indices
        row_of, column_of = (mlm_labels != IGNORE_INDEX).nonzero(as_tuple=True)  # Shape: (n,) each
        logits = self.vocabulary_scores(hidden[row_of, column_of]).float()  # Shape: (n, vocab): the sparse head
        targets = mlm_labels[row_of, column_of]
        nll = F.cross_entropy(logits, targets, reduction="none")  # Shape: (n,)
        correct = (logits.detach().argmax(-1) == targets).float()
        zeros = torch.zeros(hidden.shape[0], device=hidden.device, dtype=torch.float32)
        stats = [zeros.index_add(0, row_of, nll), zeros.index_add(0, row_of, torch.ones_like(nll)), zeros.index_add(0, row_of, correct)]
        columns = torch.stack(stats, dim=1)  # Shape: (batch, 3)
        if self.sentence_path is None:
            return columns
        pooled = self.pooler(hidden)  # Shape: (batch, hidden)
        sentence = self.get_submodule(self.sentence_path)(pooled).float()  # Shape: (batch, 2)
        return torch.cat([columns, sentence], dim=1)


def dense_loss(head: PretrainingHead, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The masked-LM loss scoring every position (what a stock ...ForMaskedLM computes); for checks."""
    logits = head.vocabulary_scores(hidden)  # Shape: (batch, seq, vocab)
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)


def tie_check(head: PretrainingHead, word_embeddings: nn.Embedding) -> Optional[str]:
    """None when the decoder still shares the input embeddings' storage, else what broke."""
    decoder = head.get_submodule(head.lm_path).get_submodule("decoder") if hasattr(head.get_submodule(head.lm_path), "decoder") else None
    if decoder is None:
        return "the masked-LM head has no decoder layer"
    if decoder.weight.data_ptr() != word_embeddings.weight.data_ptr():
        return "the masked-LM decoder is no longer tied to the input word embeddings"
    return None
