"""Continued pretraining: masked-LM (BERT's 15% / 80-10-10), whole-word or span masking, optionally NSP or SOP.

Input is raw text: a ``.txt`` file in BERT's layout (one sentence per line, a blank line between
documents) or a text column (a row is a document, its lines its sentences; ``task.rows_per_document``
groups consecutive rows). Sentences are packed into segments within a document (``pretraining_rows``).
Training rows are stored clean and masked in ``collate`` from a generator seeded by (train.seed,
epoch, row), so masks are fresh every epoch, identical on any number of processes and after a
resume; evaluation rows are masked once at encoding from ``task.corpus_seed``, so every evaluation
scores the same masks. Example::

    bert-tasks train mlm data.train=corpus.txt data.validation=heldout.txt
    bert-tasks train mlm task.masking=whole_word task.sentence_objective=sop
    bert-tasks train glue/sst2 model.checkpoint=runs/mlm-full
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Optional, Union

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForMaskedLM, AutoModelForPreTraining, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from ..backbone import take_pooler
from ..batching import IGNORE_INDEX, EncodedDataset, collate_tokens, pad_sequences
from ..config import ModelConfig
from ..data import Split
from ..errors import ConfigError, DataError
from ..model import TaskModel
from ..ranges import check_range
from ..registry import TASKS
from .base import PAD_OUTPUT, Task, initializer_range, stock_state_dict
from .classification import Pooler
from .masking import MaskingRule, choose_positions, corrupt
from .mlm_head import LM_HEAD_PATHS, SENTENCE_HEAD_PATHS, STATS, PretrainingHead, find_path, load_pretraining_network
from .pretraining_rows import RowTemplate, build_rows, documents_of, tokenize_documents

OWN_SENTENCE_HEAD = "sentence_head"  # a family without a pretrained sentence head gets this new one


@dataclass(frozen=True)
class MaskedLMConfig:
    name: str = "mlm"
    max_length: int = 128  # tokens per row, special tokens included
    mask_probability: float = 0.15  # share of maskable tokens (of words, for whole_word / span) that are predicted
    replace_mask: float = 0.8  # of the predicted: become [MASK]
    replace_random: float = 0.1  # ... become a random token
    replace_keep: float = 0.1  # ... keep their token (the three sum to 1)
    masking: Literal["token", "whole_word", "span"] = "token"
    span_p: float = 0.2  # span masking: geometric length parameter (SpanBERT)
    span_max_words: int = 10
    sentence_objective: Literal["none", "nsp", "sop"] = "none"
    short_segment_share: float = 0.1  # share of segments given a shorter random target length (BERT: 0.1)
    rows_per_document: int = 1  # a table: consecutive rows that form one document
    corpus_seed: int = 12345  # seeds segment packing, sentence pairs and the fixed evaluation masks
    top_k: int = 5  # prediction: candidates per [MASK]

    def validate(self) -> None:
        check_range("task.max_length", self.max_length, 8)
        check_range("task.short_segment_share", self.short_segment_share, 0, 1)
        check_range("task.rows_per_document", self.rows_per_document, 1)
        check_range("task.top_k", self.top_k, 1)
        check_range("task.corpus_seed", self.corpus_seed, 0, 2**31 - 1)
        for key in ("replace_mask", "replace_random", "replace_keep"):
            check_range(f"task.{key}", getattr(self, key), 0, 1)
        if abs(self.replace_mask + self.replace_random + self.replace_keep - 1.0) > 1e-6:
            raise ConfigError(
                f"task.replace_mask / replace_random / replace_keep = {self.replace_mask} / {self.replace_random} / {self.replace_keep}: "
                "expected shares of the predicted tokens that sum to 1 (BERT: 0.8 / 0.1 / 0.1)"
            )
        self.rule()

    def rule(self) -> MaskingRule:
        return MaskingRule(self.mask_probability, self.replace_mask, self.replace_random, whole_word=self.masking != "token",
                           span=self.masking == "span", span_p=self.span_p, span_max_words=self.span_max_words)


def row_generator(*numbers: int) -> torch.Generator:
    """A generator seeded from several numbers (seed, epoch, row): the same draw wherever the row is processed."""
    seed = 0
    for number in numbers:
        seed = (seed * 1_000_003 + int(number) + 1) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


@TASKS.register("mlm", MaskedLMConfig)
class MaskedLanguageModeling(Task):
    pipeline_tag = "fill-mask"
    fixed_inputs = False  # fresh masks every epoch
    outputs_vary_in_length = True  # prediction: candidates for each [MASK] of a text
    plain_text_files = True
    streamable_training = True  # nothing to learn from the corpus before training: it can be streamed

    def __init__(self, config: MaskedLMConfig, data: Any, tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__(config, data, tokenizer)
        if tokenizer.mask_token_id is None:
            raise ConfigError(f"model.checkpoint: its tokenizer ({type(tokenizer).__name__}) has no mask token; masked-LM training needs one")
        if config.masking != "token" and not tokenizer.is_fast:
            raise ConfigError(f"task.masking={config.masking}: needs a fast tokenizer (word boundaries per token); this checkpoint's is slow")
        self.rule = config.rule()
        self.template = RowTemplate.probe(tokenizer)
        self.mask_id = int(tokenizer.mask_token_id)
        self.vocab_size = len(tokenizer)
        self.seed, self.epoch = 0, 0

    @property
    def sentence_objective(self) -> Optional[str]:
        return None if self.config.sentence_objective == "none" else self.config.sentence_objective

    @property
    def stock_class(self) -> type:  # type: ignore[override]
        return AutoModelForPreTraining if self.sentence_objective else AutoModelForMaskedLM

    # -- what the data defines ------------------------------------------------
    def fit(self, train: Split) -> None:
        self._text_column(train)

    def state_dict(self) -> dict[str, Any]:
        return {"mask_token_id": self.mask_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mask_id = int(state.get("mask_token_id", self.mask_id))

    def start_epoch(self, epoch: int, seed: int) -> None:
        """Training calls this before each epoch: the masks drawn in ``collate`` depend on (seed, epoch, row)."""
        self.seed, self.epoch = int(seed), int(epoch)

    def _text_column(self, split: Split) -> str:
        split.adopt_column(self.data.text_column, ("text",))
        split.require_columns([self.data.text_column], ["data.text_column"])
        return self.data.text_column

    # -- examples to tensors ----------------------------------------------------
    def encode(self, split: Split, with_labels: bool = True) -> EncodedDataset:
        column = self._text_column(split)
        if not with_labels:
            return self._encode_queries(split, column)
        corpus = tokenize_documents(self.tokenizer, documents_of(split, column, self.config.rows_per_document))
        columns = build_rows(corpus, self.template, self.config.max_length, self.config.sentence_objective,
                             self.config.short_segment_share, self.config.corpus_seed, split.origin)
        if not any(w >= 0 for words in columns["word_ids"] for w in words):
            raise DataError(f"{split.origin}: no maskable token (every token is a special token)")
        if split.name != "train":  # evaluation: masked once, the same way for every evaluation and process
            columns["mlm_labels"] = []
            for index, (ids, words) in enumerate(zip(columns["input_ids"], columns["word_ids"])):
                corrupted, labels = self._mask_row(ids, words, row_generator(self.config.corpus_seed, index))
                columns["input_ids"][index] = corrupted
                columns["mlm_labels"].append(labels)
            if all(label == IGNORE_INDEX for labels in columns["mlm_labels"] for label in labels):
                raise DataError(f"{split.origin}: too little text: the fixed evaluation masks chose no token to predict")
        return EncodedDataset(columns)

    def encode_chunk_rows(self, wanted: int) -> int:
        """Whole documents per piece: each piece packs its own documents into rows and draws NSP/SOP partners
        among them (the rows differ from encoding the split whole only at piece edges and in partners)."""
        per = self.config.rows_per_document
        return max(per, wanted // per * per)

    def _encode_queries(self, split: Split, column: str) -> EncodedDataset:
        """Prediction input: texts with the tokenizer's mask token where a word is to be filled in."""
        texts = split.texts(column, allow_empty=False)
        encoded = self.tokenizer(texts, truncation=True, max_length=self.config.max_length)
        for index, ids in enumerate(encoded["input_ids"]):
            if self.mask_id not in ids:
                raise DataError(f"{split.where(index)}: field {column!r} has no {self.tokenizer.mask_token} token to fill in (within task.max_length tokens)")
        return EncodedDataset({name: encoded[name] for name in ("input_ids", "attention_mask", "token_type_ids") if name in encoded})

    def _mask_row(self, ids: list[int], words: list[int], generator: torch.Generator) -> tuple[list[int], list[int]]:
        # Shape: one row (1, seq)
        input_ids, word_ids = torch.tensor([ids]), torch.tensor([words])
        chosen = choose_positions(word_ids >= 0, word_ids, self.rule, generator)
        corrupted, labels = corrupt(input_ids, chosen, self.rule, self.mask_id, self.vocab_size, generator)
        return corrupted[0].tolist(), labels[0].tolist()

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        """Training rows are masked here (fresh each epoch); evaluation rows come masked; prediction rows have none."""
        if "labels" not in features[0]:
            return collate_tokens(features, self.tokenizer.pad_token_id or 0)
        if "mlm_labels" not in features[0]:
            masked = []
            for feature in features:
                ids, labels = self._mask_row(feature["input_ids"], feature["word_ids"], row_generator(self.seed, self.epoch, feature["index"]))
                masked.append({**feature, "input_ids": ids, "mlm_labels": labels})
            features = masked
        batch = collate_tokens(features, self.tokenizer.pad_token_id or 0, {"labels": torch.tensor([f["labels"] for f in features], dtype=torch.long)})
        batch["inputs"]["mlm_labels"] = pad_sequences([f["mlm_labels"] for f in features], IGNORE_INDEX)  # Shape: (batch, seq)
        return batch

    # -- the model on top of the encoder ----------------------------------------
    def build_model(self, model: ModelConfig, network_config: Optional[PretrainedConfig] = None) -> TaskModel:
        network = load_pretraining_network(model.checkpoint, model.revision, model.dropout, network_config)
        prefix = network.base_model_prefix
        backbone = getattr(network, prefix)
        lm_path = find_path(network, LM_HEAD_PATHS)
        if lm_path is None:
            raise ConfigError(f"model.checkpoint={model.checkpoint!r}: cannot find the masked-LM head of {type(network).__name__} (looked for {', '.join(LM_HEAD_PATHS)})")
        sentence_path = find_path(network, SENTENCE_HEAD_PATHS)
        if sentence_path is not None and not self.sentence_objective:  # unused: it would get no gradient
            owner, _, attribute = sentence_path.rpartition(".")
            delattr(network.get_submodule(owner) if owner else network, attribute)
            sentence_path = None
        parts = {name: module for name, module in network.named_children() if name != prefix}
        pooler = take_pooler(backbone)
        hidden, std = backbone.config.hidden_size, initializer_range(backbone.config)
        if self.sentence_objective:
            if pooler is None:
                pooler = Pooler(hidden)
                torch.nn.init.normal_(pooler.dense.weight, std=std)
                torch.nn.init.zeros_(pooler.dense.bias)
            if sentence_path is None:
                parts[OWN_SENTENCE_HEAD] = torch.nn.Linear(hidden, 2)
                torch.nn.init.normal_(parts[OWN_SENTENCE_HEAD].weight, std=std)
                torch.nn.init.zeros_(parts[OWN_SENTENCE_HEAD].bias)
                sentence_path = OWN_SENTENCE_HEAD
        return TaskModel(backbone, PretrainingHead(parts, lm_path, sentence_path, pooler))

    def loss_sum(self, outputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed NLL over predicted tokens [, summed sentence loss]), (predicted tokens [, rows]): the MLM loss
        is a mean over predicted tokens and the sentence loss a mean over rows, each exact across processes."""
        # Shape: outputs (batch, STATS [+ 2]), labels (batch,)
        mlm_sum, mlm_count = outputs[:, 0].sum(), outputs[:, 1].sum()
        if not self.sentence_objective:
            return mlm_sum, mlm_count
        sentence_sum = F.cross_entropy(outputs[:, STATS:].float(), labels, reduction="sum")
        rows = torch.tensor(float(labels.shape[0]), device=labels.device)
        return torch.stack([mlm_sum, sentence_sum]), torch.stack([mlm_count, rows])

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        summed, count = self.loss_sum(outputs, labels)
        return (summed / count.clamp(min=1.0)).sum()

    def predict_step(self, model: TaskModel, batch: dict[str, Any]) -> torch.Tensor:
        """Evaluation rows: the head's per-row sums. Prediction rows: per [MASK], its position and the
        top-k token ids and probabilities. Shape: -> (batch, STATS [+ 2]) or (batch, masks * (1 + 2k))"""
        inputs = batch["inputs"]
        if "mlm_labels" in inputs:
            return model(**inputs).float()
        hidden = model.encode(**model.encoder_inputs(inputs))  # Shape: (batch, seq, hidden)
        masks = inputs["input_ids"] == self.mask_id  # Shape: (batch, seq)
        probabilities = torch.softmax(model.head.vocabulary_scores(hidden[masks]).float(), dim=-1)  # Shape: (n, vocab)
        top = probabilities.topk(self.config.top_k, dim=-1)
        rows, positions = masks.nonzero(as_tuple=True)
        # Shape: (n, 1 + 2k): position, k ids, k probabilities
        per_mask = torch.cat([positions[:, None].float(), top.indices.float(), top.values], dim=1)
        width = int(masks.sum(1).max().item()) * per_mask.shape[1]
        out = torch.full((masks.shape[0], width), PAD_OUTPUT, device=hidden.device)
        for row in range(masks.shape[0]):
            flat = per_mask[rows == row].reshape(-1)
            out[row, : flat.numel()] = flat
        return out

    def evaluation_loss(self, outputs: list[np.ndarray], data: EncodedDataset) -> float:
        results = self._sums(outputs, data)
        return results["mlm_loss"] + results.get("sentence_loss", 0.0)

    # -- outputs to answers ----------------------------------------------------
    @property
    def metric_names(self) -> tuple[str, ...]:
        names = ("perplexity", "accuracy", "mlm_loss")
        return names + ((f"{self.sentence_objective}_accuracy", "sentence_loss") if self.sentence_objective else ())

    def _sums(self, outputs: list[np.ndarray], data: EncodedDataset) -> dict[str, float]:
        rows = np.stack([row[: STATS + (2 if self.sentence_objective else 0)] for row in outputs]).astype(np.float64)
        predicted = max(float(rows[:, 1].sum()), 1.0)
        mlm_loss = float(rows[:, 0].sum()) / predicted
        results = {"mlm_loss": mlm_loss, "perplexity": math.exp(min(mlm_loss, 700.0)), "accuracy": float(rows[:, 2].sum()) / predicted,
                   "predicted_tokens": float(rows[:, 1].sum())}
        if self.sentence_objective:
            logits, labels = torch.from_numpy(rows[:, STATS:]), torch.as_tensor(data.columns["labels"])
            results["sentence_loss"] = float(F.cross_entropy(logits, labels))
            results[f"{self.sentence_objective}_accuracy"] = float((logits.argmax(-1) == labels).double().mean())
        return results

    def compute_metrics(self, outputs: list[np.ndarray], data: EncodedDataset) -> dict[str, float]:
        return self._sums(outputs, data)

    def format_predictions(self, outputs: list[np.ndarray], data: EncodedDataset) -> list[dict[str, Any]]:
        """Per text, per [MASK] (in order): the top-k tokens with their probabilities."""
        k = self.config.top_k
        answers = []
        for row in outputs:
            values = row[row > PAD_OUTPUT / 2]  # positions, ids and probabilities are never negative
            masks = []
            for start in range(0, len(values) - len(values) % (1 + 2 * k), 1 + 2 * k):
                ids = [int(v) for v in values[start + 1 : start + 1 + k]]
                scores = values[start + 1 + k : start + 1 + 2 * k]
                masks.append([{"token": int(i), "token_str": self.tokenizer.decode([i]).strip(), "score": round(float(s), 6)} for i, s in zip(ids, scores)])
            answers.append({"masks": masks})
        return answers

    # -- prediction input ---------------------------------------------------------
    def examples_to_split(self, examples: Iterable[Union[str, dict]]) -> Split:
        """Texts with [MASK] tokens, or dicts with the run's text column."""
        column = self.data.text_column
        rows = [e.get(column, e.get("text")) if isinstance(e, dict) else e for e in examples]
        return Split("input", datasets.Dataset.from_dict({column: rows}), "input")

    def input_column(self, key: str) -> Optional[str]:
        return self.data.text_column if key == "text_column" else None

    # -- publishing -------------------------------------------------------------------
    def to_stock(self, model: TaskModel) -> tuple[Optional[PreTrainedModel], str]:
        if model.head.sentence_path == OWN_SENTENCE_HEAD:
            return None, f"transformers has no class with a {model.backbone.config.model_type} encoder and a sentence-pair head"
        with torch.device(next(model.parameters()).device):
            stock = self.stock_class.from_config(self.stock_config(model.backbone.config))
        prefix = stock.base_model_prefix
        state = stock_state_dict(model, prefix)
        if not state:
            return None, f"the strategy adds modules {type(stock).__name__} does not have"
        if not any(name.startswith(f"{prefix}.pooler.") for name in stock.state_dict()):
            state = {name: tensor for name, tensor in state.items() if not name.startswith(f"{prefix}.pooler.")}  # e.g. BertForMaskedLM has none
        missing, unexpected = stock.load_state_dict(state, strict=False)
        if missing or unexpected:
            return None, f"{type(stock).__name__} does not match the model ({len(missing)} missing, {len(unexpected)} unexpected weights)"
        return stock, f"{type(stock).__name__} holds every weight"

    def stock_usage(self, name: str, class_name: str) -> str:
        mask = self.tokenizer.mask_token
        return (
            "from transformers import pipeline\n\n"
            f'fill = pipeline("fill-mask", model="{name}")\n'
            f'print(fill("The movie was {mask}."))\n'
        )
