"""A task defined outside bert_tasks, in this one file: label a text from its first token's vector.

It registers itself like a shipped task; a recipe loads it with ``plugins: [plugins.toy_task]``.
It has no stock transformers class, so publishing exports it in bert_tasks format.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bert_tasks.batching import EncodedDataset, collate_tokens
from bert_tasks.data import Split
from bert_tasks.registry import TASKS
from bert_tasks.tasks.base import Task


@dataclass(frozen=True)
class FirstTokenConfig:
    name: str = "first_token"
    max_length: int = 32


class FirstTokenHead(nn.Module):
    def __init__(self, hidden: int, labels: int) -> None:
        super().__init__()
        self.out = nn.Linear(hidden, labels)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.out(hidden[:, 0])  # Shape: [batch, seq, hidden] -> [batch, labels]


@TASKS.register("first_token", FirstTokenConfig)
class FirstToken(Task):
    pipeline_tag = "text-classification"

    def __init__(self, config: FirstTokenConfig, data: Any, tokenizer: Any) -> None:
        super().__init__(config, data, tokenizer)
        self.labels: list[str] = []

    def fit(self, train: Split) -> None:
        self.labels = sorted({str(v) for v in train.dataset[self.data.label_column]})

    def state_dict(self) -> dict[str, Any]:
        return {"labels": self.labels}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.labels = list(state["labels"])

    def encode(self, split: Split, with_labels: bool = True) -> EncodedDataset:
        encoded = self.tokenizer(split.texts(self.data.text_column), truncation=True, max_length=self.config.max_length)
        columns = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        if with_labels:
            columns["labels"] = [self.labels.index(str(v)) for v in split.dataset[self.data.label_column]]
        return EncodedDataset(columns)

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        extra = {"labels": torch.tensor([f["labels"] for f in features])} if "labels" in features[0] else None
        return collate_tokens(features, self.tokenizer.pad_token_id or 0, extra)

    def build_head(self, backbone_config: Any, pooler: Optional[nn.Module]) -> nn.Module:
        return FirstTokenHead(backbone_config.hidden_size, len(self.labels))

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), labels)

    @property
    def metric_names(self) -> tuple[str, ...]:
        return ("accuracy",)

    def compute_metrics(self, outputs: list[np.ndarray], data: EncodedDataset) -> dict[str, float]:
        predicted = np.stack(outputs).argmax(-1)
        return {"accuracy": float((predicted == np.asarray(data.columns["labels"])).mean())}

    def format_predictions(self, outputs: list[np.ndarray], data: EncodedDataset) -> list[dict[str, Any]]:
        return [{"label": self.labels[int(row.argmax())], "logits": [float(x) for x in row]} for row in outputs]

    def examples_to_split(self, examples: Iterable[str]) -> Split:
        return Split("input", datasets.Dataset.from_dict({self.data.text_column: list(examples)}), "input")
