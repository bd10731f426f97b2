"""What every task plug-in provides. A task knows nothing about tuning strategies."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Optional

import numpy as np
import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from ..batching import EncodedDataset
from ..config import DataConfig
from ..data import Split


class Task(ABC):
    """How examples become model inputs, and model outputs become answers and metrics.

    Life cycle: ``fit(train split)`` learns what the data defines (label names);
    ``state_dict()`` saves that with the run so ``load_state_dict`` rebuilds the same
    task for prediction; ``encode`` turns a Split into token ids; ``collate`` pads a
    batch; ``build_head`` makes the module on top of the encoder; ``loss``,
    ``decode`` and ``compute_metrics`` turn head outputs into numbers.
    """

    registered_name: str = ""

    def __init__(self, config: Any, data: DataConfig, tokenizer: PreTrainedTokenizerBase) -> None:
        self.config = config
        self.data = data
        self.tokenizer = tokenizer

    # -- what the data defines ------------------------------------------------
    @abstractmethod
    def fit(self, train: Split) -> None:
        """Learn label names etc. from the training split."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """JSON-able state saved in the run directory (labels, ...)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    # -- examples to tensors ----------------------------------------------------
    @abstractmethod
    def encode(self, split: Split, with_labels: bool = True) -> EncodedDataset:
        """Tokenise a split; with_labels=False for unlabelled input (prediction)."""

    @abstractmethod
    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """Pad a list of encoded examples into ``{'inputs': {...}, 'labels': ..., 'index': ...}``."""

    # -- the model on top of the encoder ----------------------------------------
    @abstractmethod
    def build_head(self, backbone_config: PretrainedConfig, pooler: Optional[nn.Module]) -> nn.Module:
        """The head: called as ``head(hidden_states, attention_mask)``."""

    @abstractmethod
    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor: ...

    # -- outputs to answers ----------------------------------------------------
    @property
    @abstractmethod
    def metric_names(self) -> tuple[str, ...]:
        """Metrics reported at evaluation; the first is the default for picking the best checkpoint."""

    @abstractmethod
    def compute_metrics(self, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]: ...

    @abstractmethod
    def format_predictions(self, outputs: np.ndarray) -> list[dict[str, Any]]:
        """One JSON-able answer per example (label and scores, ...)."""
