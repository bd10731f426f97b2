"""Sentence and sentence-pair classification and regression from [CLS] (GLUE).

Input: ``[CLS] A [SEP]`` or ``[CLS] A [SEP] B [SEP]`` with token type ids. The head
pools the sequence (``cls``: the encoder's pooler, dense + tanh over [CLS], as in
BERT's next-sentence objective; ``mean``: mean over real tokens), applies dropout
and a linear layer: one output per label (cross-entropy) or one output
(regression, mean squared error, as for STS-B).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Optional, Sequence, Union

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import softmax
from torch import nn
from transformers import AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from .. import metrics
from ..batching import EncodedDataset, collate_tokens
from ..data import Split
from ..errors import ConfigError, DataError
from ..ranges import check_range
from ..registry import TASKS
from ..sanity import MIN_ROWS, Baseline, collapsed
from ..model import TaskModel
from .base import Task, head_dropout, initializer_range, labelled_config


@dataclass(frozen=True)
class ClassificationConfig:
    name: str = "classification"
    problem: Literal["single_label", "regression"] = "single_label"
    pooling: Literal["cls", "mean"] = "cls"  # cls: through the pooler, like BertForSequenceClassification
    max_length: int = 128  # longer inputs are truncated (longest-first across a pair)
    labels: Optional[list[str]] = None  # fixed label order; None: ClassLabel names, else sorted values seen in train
    metrics: Optional[list[str]] = None  # None: accuracy (+ f1 with 2 labels) / pearson, spearman
    classifier_dropout: Optional[float] = None  # None: the checkpoint's hidden dropout

    def validate(self) -> None:
        allowed = metrics.REGRESSION_METRICS if self.problem == "regression" else metrics.CLASSIFICATION_METRICS
        for name in self.metrics or ():
            if name not in allowed:
                raise ConfigError(f"task.metrics: {name!r} is not a {self.problem} metric; choose from {', '.join(allowed)}")
        check_range("task.max_length", self.max_length, 4)
        check_range("task.classifier_dropout", self.classifier_dropout, 0, 1, high_open=True)
        if self.labels is not None and (len(set(self.labels)) != len(self.labels) or len(self.labels) < (1 if self.problem == "regression" else 2)):
            raise ConfigError(f"task.labels: expected at least 2 distinct label names, got {list(self.labels)}")


class Pooler(nn.Module):
    """dense + tanh over the [CLS] vector (used when the checkpoint has no pooler)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden[:, 0]))  # Shape: [batch, hidden]


class ClassificationHead(nn.Module):
    def __init__(self, hidden_size: int, outputs: int, dropout: float, pooling: str, pooler: Optional[nn.Module], init_std: float) -> None:
        super().__init__()
        self.pooling = pooling
        self.reads_first_token_only = pooling == "cls"  # the top layer may compute [CLS] alone (first_token_top)
        self.pooler = (pooler or Pooler(hidden_size)) if pooling == "cls" else None
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, outputs)
        nn.init.normal_(self.classifier.weight, std=init_std)
        nn.init.zeros_(self.classifier.bias)
        if pooler is None and self.pooler is not None:
            nn.init.normal_(self.pooler.dense.weight, std=init_std)
            nn.init.zeros_(self.pooler.dense.bias)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # Shape: hidden [batch, seq, hidden], attention_mask [batch, seq]
        if self.pooler is not None:
            pooled = self.pooler(hidden)  # Shape: [batch, hidden]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # Shape: [batch, seq, 1]
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.classifier(self.dropout(pooled))  # Shape: [batch, outputs]


@TASKS.register("classification", ClassificationConfig)
class Classification(Task):
    pipeline_tag = "text-classification"
    stock_class = AutoModelForSequenceClassification

    def __init__(self, config: ClassificationConfig, data: Any, tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__(config, data, tokenizer)
        self.labels: list[str] = list(config.labels) if config.labels else []

    @property
    def regression(self) -> bool:
        return self.config.problem == "regression"

    # -- publishing ------------------------------------------------------------------
    def stock_config(self, network_config: PretrainedConfig) -> PretrainedConfig:
        config = super().stock_config(network_config)
        if self.regression:
            config = labelled_config(config, ["score"])
            config.problem_type = "regression"
        else:
            config = labelled_config(config, self.labels)
            config.problem_type = "single_label_classification"
        return config

    def to_stock(self, model: TaskModel) -> tuple[Optional[PreTrainedModel], str]:
        if self.config.pooling != "cls":
            return None, "mean pooling has no transformers class"
        return super().to_stock(model)

    # -- what the data defines ------------------------------------------------
    def fit(self, train: Split) -> None:
        self._fit_labels(train)
        if not self.regression:  # the trivial baseline: always the most common training label (sanity.py)
            self.majority = self.labels[Counter(self._label_ids(train)).most_common(1)[0][0]]

    def _fit_labels(self, train: Split) -> None:
        self._check_columns(train, with_labels=True)
        if self.regression or self.config.labels:
            return
        feature = train.dataset.features.get(self.data.label_column)
        names = getattr(feature, "names", None)
        if names:
            self.labels = list(names)
            return
        values = {v for v in self._raw_labels(train) if v is not None and v != ""}
        if all(isinstance(v, (int, np.integer)) or (isinstance(v, str) and v.lstrip("-").isdigit()) for v in values):
            self.labels = [str(v) for v in sorted(values, key=int)]
        else:
            self.labels = sorted(str(v) for v in values)
        if len(self.labels) < 2:
            raise DataError(f"{train.origin}: column {self.data.label_column!r} has {len(self.labels)} distinct label(s); classification needs at least 2")

    def state_dict(self) -> dict[str, Any]:
        return {"labels": self.labels, "problem": self.config.problem, "majority": getattr(self, "majority", None)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.labels = list(state["labels"])
        self.majority = state.get("majority")

    @property
    def num_outputs(self) -> int:
        return 1 if self.regression else len(self.labels)

    # -- examples to tensors ----------------------------------------------------
    def _check_columns(self, split: Split, with_labels: bool) -> None:
        columns = [self.data.text_column, self.data.text_pair_column]
        keys = ["data.text_column", "data.text_pair_column"]
        if with_labels:
            columns.append(self.data.label_column)
            keys.append("data.label_column")
        split.require_columns(columns, keys)

    def _raw_labels(self, split: Split) -> list:
        """The label column, each value checked to be one label (text or a whole number), never a list or
        an object; -1 is refused: it marks an unlabelled row (GLUE test files), which cannot train or score."""
        column = self.data.label_column
        values = list(split.dataset[column])
        unlabelled_is_a_class = "-1" in (self.config.labels or ())
        if self.regression:  # numbers are checked in _label_ids; -1 is a real score, unless every row has it
            if values and all(str(v).strip() in ("-1", "-1.0") for v in values):
                raise DataError(f"{split.origin}: every label in field {column!r} is -1, the GLUE marker of an unlabelled file; "
                                f"{split.name} data needs labels (predict unlabelled files with `bert-tasks predict`)")
            return values
        for index, value in enumerate(values):
            if not (value is None or isinstance(value, str) or (isinstance(value, (int, np.integer)) and not isinstance(value, bool))):
                raise DataError(f"{split.where(index)}: field {column!r} must be one label (text or a whole number), got {str(value)[:60]!r}")
            if str(value).strip() == "-1" and not unlabelled_is_a_class:
                count = sum(str(v).strip() == "-1" for v in values)
                what = "every row" if count == len(values) else f"{count} of {len(values)} rows"
                raise DataError(
                    f"{split.where(index)}: label -1 in field {column!r} marks an unlabelled row ({what}, as in GLUE test files); "
                    f"{split.name} data needs labels (predict unlabelled files with `bert-tasks predict`; if -1 is a real class, list it in task.labels)"
                )
        return values

    def _label_ids(self, split: Split) -> list:
        column = self.data.label_column
        values = self._raw_labels(split)
        if self.regression:
            out = []
            for index, value in enumerate(values):
                try:
                    number = float("nan") if isinstance(value, bool) else float(value)
                except (TypeError, ValueError):
                    number = float("nan")
                if not np.isfinite(number):
                    raise DataError(f"{split.where(index)}: field {column!r} must be a number for regression, got {value!r}")
                out.append(number)
            return out
        ids = {name: i for i, name in enumerate(self.labels)}
        feature = split.dataset.features.get(column)
        named = getattr(feature, "names", None)
        out = []
        for index, value in enumerate(values):
            key = str(value)
            if named and isinstance(value, int) and 0 <= value < len(named) and named[value] in ids:
                key = named[value]  # a ClassLabel index by its name; a run that learnt the indices as labels ('0', '1') keeps them
            if key not in ids:
                raise DataError(
                    f"{split.where(index)}: label {value!r} in field {column!r} is not one of {self.labels} (labels come from the training data or task.labels)"
                )
            out.append(ids[key])
        return out

    def encode(self, split: Split, with_labels: bool = True) -> EncodedDataset:
        self._check_columns(split, with_labels)
        texts = split.texts(self.data.text_column)
        pairs = split.texts(self.data.text_pair_column) if self.data.text_pair_column else None
        encoded = self.tokenizer(texts, pairs, truncation=True, max_length=self.config.max_length)
        columns = {name: encoded[name] for name in ("input_ids", "attention_mask", "token_type_ids") if name in encoded}
        if with_labels:
            columns["labels"] = self._label_ids(split)
        return EncodedDataset(columns)

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        extra = {}
        if "labels" in features[0]:
            dtype = torch.float32 if self.regression else torch.long
            extra["labels"] = torch.tensor([f["labels"] for f in features], dtype=dtype)
        return collate_tokens(features, self.tokenizer.pad_token_id or 0, extra)

    # -- the model on top of the encoder ----------------------------------------
    def build_head(self, backbone_config: PretrainedConfig, pooler: Optional[nn.Module]) -> nn.Module:
        dropout = head_dropout(backbone_config, self.config.classifier_dropout)
        return ClassificationHead(backbone_config.hidden_size, self.num_outputs, dropout, self.config.pooling, pooler, initializer_range(backbone_config))

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        outputs = outputs.float()  # the loss in float32 even under bf16/fp16 autocast
        if self.regression:
            return F.mse_loss(outputs.squeeze(-1), labels.float())
        return F.cross_entropy(outputs, labels)

    # -- outputs to answers ----------------------------------------------------
    @property
    def metric_names(self) -> tuple[str, ...]:
        if self.config.metrics:
            return tuple(self.config.metrics)
        if self.regression:
            return ("pearson", "spearman")
        return ("accuracy", "f1") if len(self.labels) == 2 else ("accuracy", "f1_macro")

    def compute_metrics(self, outputs: list[np.ndarray], data: EncodedDataset) -> dict[str, float]:
        outputs, labels = np.stack(outputs), np.asarray(data.columns["labels"])
        if self.regression:
            return metrics.compute(self.metric_names, metrics.REGRESSION_METRICS, outputs.reshape(-1), labels.astype(np.float64))
        return metrics.compute(self.metric_names, metrics.CLASSIFICATION_METRICS, outputs.argmax(-1), labels)

    def baseline(self, data: EncodedDataset) -> Optional[Baseline]:
        """Every row the majority class of the training data (regression: none; a constant has no correlation)."""
        if self.regression:
            return None
        labels = np.asarray(data.columns["labels"])
        majority, where = getattr(self, "majority", None), "of the training data"
        if majority not in self.labels:
            majority, where = self.labels[int(np.bincount(labels, minlength=len(self.labels)).argmax())], "of this set"
        constant = np.full(len(labels), self.labels.index(majority))
        return Baseline(f"majority class {majority!r} {where}", metrics.compute(self.metric_names, metrics.CLASSIFICATION_METRICS, constant, labels))

    def collapse(self, outputs: list[np.ndarray], data: EncodedDataset) -> Optional[str]:
        stacked = np.stack(outputs)
        if self.regression:
            labels = np.asarray(data.columns["labels"], dtype=np.float64)
            spread, wanted = float(stacked.std()), float(labels.std())
            if len(labels) >= MIN_ROWS and wanted > 0 and spread < 0.01 * wanted:
                return f"every score is about {float(stacked.mean()):.4f} (spread {spread:.2g}, the labels' {wanted:.2g})"
            return None
        return collapsed([self.labels[int(i)] for i in stacked.argmax(-1)], "predicted classes")

    def format_predictions(self, outputs: list[np.ndarray], data: EncodedDataset) -> list[dict[str, Any]]:
        outputs = np.stack(outputs)
        if self.regression:
            return [{"score": float(row[0])} for row in outputs]
        probs = softmax(outputs, axis=-1)
        return [
            {"label": self.labels[int(row.argmax())], "scores": {name: round(float(p), 6) for name, p in zip(self.labels, row)}}
            for row in probs
        ]

    # -- prediction input ---------------------------------------------------------
    def examples_to_split(self, examples: Iterable[Union[str, Sequence[str], dict]]) -> Split:
        """Texts, (text, text_pair) tuples, or dicts with the run's column names."""
        text_column, pair_column = self.data.text_column, self.data.text_pair_column
        rows: dict[str, list] = {text_column: []}
        if pair_column:
            rows[pair_column] = []
        for number, example in enumerate(examples, start=1):
            if isinstance(example, dict):
                parts = [example.get(text_column)] + ([example.get(pair_column)] if pair_column else [])
            elif isinstance(example, str):
                if pair_column:
                    raise DataError(f"example {number}: this model reads sentence pairs; pass (text, text_pair)")
                parts = [example]
            else:
                parts = list(example)
                if len(parts) != (2 if pair_column else 1):
                    raise DataError(f"example {number}: expected {'a (text, text_pair) pair' if pair_column else 'one text'}, got {len(parts)} parts")
            for column, part in zip(rows, parts):
                rows[column].append(part)
        return Split("input", datasets.Dataset.from_dict(rows), "input")

    def prepare_input(self, split: Split) -> Split:
        """Files may name their columns 'text' / 'text_pair' instead of the training names."""
        present = split.dataset.column_names
        renames = {}
        if self.data.text_column not in present and "text" in present:
            renames["text"] = self.data.text_column
        if self.data.text_pair_column and self.data.text_pair_column not in present and "text_pair" in present:
            renames["text_pair"] = self.data.text_pair_column
        if renames:
            split.dataset = split.dataset.rename_columns(renames)
        return split
