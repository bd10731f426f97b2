"""What every task plug-in provides. A task knows nothing about tuning strategies.

Publishing asks the task how its model exports to stock transformers (``pipeline_tag``,
``stock_class``, ``to_stock`` / ``from_stock``, ``stock_usage``), so publishing never names
a task; the defaults here say "no stock class: export in bert_tasks format".
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import torch
from torch import nn
from transformers import AutoModel, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from ..backbone import load_backbone, take_pooler
from ..batching import IGNORE_INDEX, EncodedDataset, pad_stack
from ..config import DataConfig, ModelConfig
from ..data import Split
from ..atomic_files import replacing
from ..model import TaskModel

PAD_OUTPUT = -1e4  # fills outputs beyond a row's length: a logit that softmax ignores


def head_dropout(backbone_config: PretrainedConfig, override: Optional[float]) -> float:
    """Dropout before a head's linear layer: the override, else the checkpoint's classifier or hidden dropout."""
    for value in (override, getattr(backbone_config, "classifier_dropout", None), getattr(backbone_config, "hidden_dropout_prob", None), getattr(backbone_config, "dropout", None)):
        if value is not None:
            return float(value)
    return 0.1


def initializer_range(backbone_config: PretrainedConfig) -> float:
    """Standard deviation for new head weights, as the checkpoint initialised its own."""
    return float(getattr(backbone_config, "initializer_range", 0.02))


class Task(ABC):
    """How examples become model inputs, and model outputs become answers and metrics.

    Life cycle: ``fit(train split)`` learns what the data defines (label names);
    ``state_dict()`` saves that with the run so ``load_state_dict`` rebuilds the same
    task for prediction; ``encode`` turns a Split into rows of token ids (one example
    may become several rows, e.g. windows over a long sentence); ``collate`` pads a
    batch; ``build_model`` puts the task's head (``build_head``) on the pretrained
    network; ``loss`` trains it; ``predict_step`` gives each row's output at evaluation;
    ``compute_metrics`` and ``format_predictions`` turn the outputs of all rows back
    into one answer per example.
    """

    registered_name: str = ""
    # True when the head gives one output per token ([batch, seq, ...]): evaluation then
    # pads across processes and trims each row to its own length.
    outputs_per_token: bool = False
    # True when rows' outputs differ in length for another reason (e.g. generated text): evaluation
    # pads them across processes with PAD_OUTPUT and the task strips that itself.
    outputs_vary_in_length: bool = False
    # The Hub pipeline tag of this task's models (e.g. 'text-classification'); None: no pipeline fits.
    pipeline_tag: Optional[str] = None
    # The stock transformers class holding an encoder plus this task's head, weight for weight (e.g.
    # AutoModelForSequenceClassification); None: models of this task publish in bert_tasks format.
    stock_class: Optional[type] = None
    # True when a ``.txt`` file holds raw text in BERT's pretraining layout rather than CoNLL columns.
    plain_text_files: bool = False
    # False when a row's encoder input changes from epoch to epoch (e.g. fresh masks each epoch): the
    # output of a frozen encoder part then cannot be computed once and reused (``train.cache_frozen``).
    fixed_inputs: bool = True
    # Task config keys that only change how outputs become answers (a threshold, a beam width): `bert-tasks
    # evaluate RUN task.KEY=VALUE` may change them on a trained run; any other task key would need training again.
    decoding_keys: tuple[str, ...] = ()
    # True when fitting the task needs nothing from the whole training split (no label set to learn), so
    # its training rows can be streamed (data.streaming) and fitted on the first chunk.
    streamable_training: bool = False

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

    def adopt_evaluation(self, results: dict[str, float]) -> None:
        """Keep what the best evaluation tuned (e.g. a no-answer threshold); saved with the run."""

    def position_lengths(self) -> dict[str, tuple[int, int]]:
        """Config keys that set how many positions a row fills: key -> (value, positions), checked
        against the checkpoint's position table before training."""
        length = getattr(self.config, "max_length", None)
        return {"task.max_length": (length, length)} if isinstance(length, int) else {}

    def start_epoch(self, epoch: int, seed: int) -> None:
        """Called by training before each epoch (also the resumed one): a task whose rows change per epoch
        (fresh masks) derives them from (seed, epoch, row) here, the same on any number of processes."""

    # -- examples to tensors ----------------------------------------------------
    @abstractmethod
    def encode(self, split: Split, with_labels: bool = True) -> EncodedDataset:
        """Tokenise a split; with_labels=False for unlabelled input (prediction)."""

    def encode_chunk_rows(self, wanted: int) -> int:
        """Rows per piece when a big training split is encoded a piece at a time (arrow_store.py). Rows of
        most tasks do not depend on each other, so any piece gives the same rows as the whole split."""
        return wanted

    @abstractmethod
    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """Pad a list of encoded examples into ``{'inputs': {...}, 'labels': ..., 'index': ...}``."""

    # -- the model on top of the encoder ----------------------------------------
    def build_model(self, model: ModelConfig, network_config: Optional[PretrainedConfig] = None) -> TaskModel:
        """The pretrained encoder (``AutoModel``) with this task's head on top. With ``network_config``
        the encoder is built empty from it (the caller loads trained weights next)."""
        if network_config is None:
            backbone = load_backbone(model.checkpoint, model.revision, model.dropout)
        else:
            backbone = AutoModel.from_config(network_config)
        pooler = take_pooler(backbone)
        return TaskModel(backbone, self.build_head(backbone.config, pooler))

    def build_head(self, backbone_config: PretrainedConfig, pooler: Optional[nn.Module]) -> nn.Module:
        """The head: called as ``head(hidden_states, attention_mask)``."""
        raise NotImplementedError(f"task {self.registered_name!r} builds its whole model in build_model")

    @abstractmethod
    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The mean loss over what the labels count (examples, or labelled tokens)."""

    def loss_sum(self, outputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed loss, number of items it sums over): training divides by the count over all
        processes, so the gradient is the same on 1 or N processes even when items per row vary."""
        count = torch.tensor(float(labels.shape[0]), device=labels.device)
        return self.loss(outputs, labels) * count, count

    def predict_step(self, model: TaskModel, batch: dict[str, Any]) -> torch.Tensor:
        """Each row's output at evaluation and prediction: the head's output in float32.
        Shape: [batch, ...] (or [batch, seq, ...] per token)"""
        return model(**batch["inputs"]).float()

    def evaluation_loss(self, outputs: list[np.ndarray], data: EncodedDataset) -> float:
        """The loss over every evaluated row, from ``predict_step`` outputs and the rows' labels."""
        labels = [np.asarray(label) for label in data.columns["labels"]]
        return float(self.loss(torch.from_numpy(pad_stack(outputs, PAD_OUTPUT)), torch.from_numpy(pad_stack(labels, IGNORE_INDEX))))

    # -- outputs to answers ----------------------------------------------------
    @property
    @abstractmethod
    def metric_names(self) -> tuple[str, ...]:
        """Metrics reported at evaluation; the first is the default for picking the best checkpoint."""

    @abstractmethod
    def compute_metrics(self, outputs: list[np.ndarray], data: EncodedDataset) -> dict[str, float]:
        """Metrics from the head output of every row of ``data`` (in row order) and its labels."""

    def report(self, results: dict[str, float]) -> Optional[str]:
        """A human-readable breakdown of ``results`` (e.g. per entity type), if the task has one."""
        return None

    def baseline(self, data: EncodedDataset) -> Optional[Any]:
        """This task's metrics on ``data`` for a trivial answer it computes itself (a sanity.Baseline: the
        majority class, no answer, the first line); None: no trivial answer fits the task."""
        return None

    def collapse(self, outputs: list[np.ndarray], data: EncodedDataset) -> Optional[str]:
        """Words for predictions that have collapsed (one class for nearly every row, the same answer to
        every question); None: they have not."""
        return None

    @abstractmethod
    def format_predictions(self, outputs: list[np.ndarray], data: EncodedDataset) -> list[dict[str, Any]]:
        """One JSON-able answer per example (label and scores, ...)."""

    # -- prediction input and output ---------------------------------------------
    @abstractmethod
    def examples_to_split(self, examples: Iterable[Any]) -> Split:
        """Python objects given to ``Predictor.predict`` as a Split of unlabelled examples."""

    def input_column(self, key: str) -> Optional[str]:
        """The column a data key ('text_column', 'text_pair_column') names in this task's input; None: unused."""
        return getattr(self.data, key, None)

    def prepare_input(self, split: Split) -> Split:
        """Adapt a prediction file (e.g. rename generic column names); default: as is."""
        return split

    def write_predictions(self, split: Split, predictions: list[dict[str, Any]], path: Path) -> None:
        """Write predictions for ``split``; default one JSON object per line (atomically: all or nothing)."""
        with replacing(Path(path)) as temporary, temporary.open("w", encoding="utf-8") as handle:
            for row in predictions:
                handle.write(json.dumps(row) + "\n")

    # -- publishing as a stock transformers model ----------------------------------
    def stock_config(self, network_config: PretrainedConfig) -> PretrainedConfig:
        """The network config with what ``stock_class`` needs from this task (labels, problem type)."""
        return network_config.__class__.from_dict(network_config.to_dict())

    def to_stock(self, model: TaskModel) -> tuple[Optional[PreTrainedModel], str]:
        """The trained model as a ``stock_class`` model with identical weights, or (None, why not).
        Default: the encoder becomes the stock model's base model and the head's weights keep their names."""
        if self.stock_class is None:
            return None, f"no transformers class for task {self.registered_name!r}"
        with torch.device(next(model.parameters()).device):  # built where the model is (no CPU copy of a GPU model)
            stock = self.stock_class.from_config(self.stock_config(model.backbone.config))
        state = stock_state_dict(model, stock.base_model_prefix)
        if not state:
            return None, f"the strategy adds modules {self.stock_class.__name__} does not have"
        missing, unexpected = stock.load_state_dict(state, strict=False)
        if missing or unexpected:
            return None, f"{type(stock).__name__} does not match the model ({len(missing)} missing, {len(unexpected)} unexpected weights)"
        return stock, f"{type(stock).__name__} holds every weight"

    def from_stock(self, stock: dict[str, torch.Tensor], model: TaskModel) -> dict[str, torch.Tensor]:
        """The weights of a stock model ``to_stock`` wrote, under the TaskModel's names."""
        return task_state_dict(stock, model.backbone.base_model_prefix)

    def stock_usage(self, name: str, class_name: str) -> str:
        """Python that loads the published stock model (the model card's "How to load")."""
        if self.pipeline_tag:
            return f'from transformers import pipeline\n\nmodel = pipeline("{self.pipeline_tag}", model="{name}")\n'
        return f'from transformers import {class_name}\n\nmodel = {class_name}.from_pretrained("{name}")\n'


def labelled_config(config: PretrainedConfig, labels: list[str]) -> PretrainedConfig:
    """``config`` with the label names a stock head class reports (id2label / label2id)."""
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    return config


def stock_state_dict(model: TaskModel, prefix: str) -> dict[str, torch.Tensor]:
    """TaskModel names -> a stock head class's: backbone.X -> PREFIX.X, head.pooler.X -> PREFIX.pooler.X,
    head.X -> X; empty when a weight has no place there (e.g. adapters or a layer mix)."""
    state = {}
    for name, tensor in model.state_dict().items():
        if name.startswith("backbone."):
            state[f"{prefix}.{name[len('backbone.'):]}"] = tensor
        elif name.startswith("head.pooler."):
            state[f"{prefix}.pooler.{name[len('head.pooler.'):]}"] = tensor
        elif name.startswith("head."):
            state[name[len("head."):]] = tensor
        else:
            return {}
    return state


def task_state_dict(stock: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The inverse of ``stock_state_dict``."""
    state = {}
    for name, tensor in stock.items():
        if name.startswith(f"{prefix}.pooler."):
            state[f"head.pooler.{name[len(prefix) + len('.pooler.'):]}"] = tensor
        elif name.startswith(f"{prefix}."):
            state[f"backbone.{name[len(prefix) + 1:]}"] = tensor
        else:
            state[f"head.{name}"] = tensor
    return state
