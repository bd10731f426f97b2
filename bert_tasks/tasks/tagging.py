"""Token tagging (CoNLL NER, chunking, POS): one label per word from a linear layer on each token.

Words are split into subword pieces. Training labels the first piece of each word
(``label_pieces: first``, as in the BERT paper's NER set-up; the other pieces are
ignored by the loss) or every piece (``all``: the continuation pieces of a ``B-X``
word are ``I-X``, of other words the word's own tag). Evaluation and prediction read
each word's tag from its first piece, so metrics score words, never pieces.

Sentences longer than ``max_length`` pieces become overlapping windows of whole
words (see ``word_windows``); each word is read from the window where it has most
context, so every input word gets exactly one tag.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Optional, Sequence, Union

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import softmax
from torch import nn
from transformers import AutoModelForTokenClassification, PretrainedConfig, PreTrainedTokenizerBase

from .. import metrics
from ..batching import IGNORE_INDEX, EncodedDataset, collate_tokens, pad_sequences
from ..conll import write_conll
from ..data import Split
from ..errors import ConfigError, DataError
from ..ranges import check_range
from ..registry import TASKS
from ..sanity import MIN_ROWS, Baseline, collapsed, most_common_share
from .base import Task, head_dropout, initializer_range, labelled_config
from .word_windows import context, plan_windows

ENTITY_TAG = re.compile(r"^([BIES])-(.+)$")
PREFIX_ORDER = {"B": 0, "I": 1, "E": 2, "S": 3}


@dataclass(frozen=True)
class TaggingConfig:
    name: str = "tagging"
    max_length: int = 256  # pieces per window, special tokens included; longer sentences become windows
    stride: int = 64  # pieces shared by neighbouring windows: context for the words near a cut
    label_pieces: Literal["first", "all"] = "first"  # which pieces of a word carry its tag in training
    scheme: Literal["auto", "IOB1", "IOB2", "IOBES", "none"] = "auto"  # auto: IOBES if S-/E- tags occur, IOB2 if B-/I-, else none (POS: accuracy only)
    strict: bool = False  # False: conlleval rules; True: seqeval strict mode (only entities valid under the scheme count)
    labels: Optional[list[str]] = None  # fixed tag set; None: ClassLabel names, else the tags seen in train
    classifier_dropout: Optional[float] = None  # None: the checkpoint's hidden dropout

    def validate(self) -> None:
        check_range("task.max_length", self.max_length, 8)
        check_range("task.classifier_dropout", self.classifier_dropout, 0, 1, high_open=True)
        if self.labels is not None and (len(set(self.labels)) != len(self.labels) or len(self.labels) < 2):
            raise ConfigError(f"task.labels: expected at least 2 distinct tags, got {list(self.labels)}")
        if not 0 <= self.stride <= (self.max_length - 2) // 2:
            raise ConfigError(f"task.stride: must be between 0 and half a window ({(self.max_length - 2) // 2}), got {self.stride}")
        if self.strict and self.scheme == "none":
            raise ConfigError("task.strict: needs an entity scheme (IOB1, IOB2, IOBES or auto), not scheme=none")


class TokenTaggingHead(nn.Module):
    """Dropout and a linear layer on every token vector (as BertForTokenClassification)."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float, init_std: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)
        nn.init.normal_(self.classifier.weight, std=init_std)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # Shape: hidden [batch, seq, hidden] -> [batch, seq, labels]
        return self.classifier(self.dropout(hidden))


def _tag_order(tag: str) -> tuple:
    match = ENTITY_TAG.match(tag)
    return (0, "", 0) if tag == "O" else (1, match.group(2), PREFIX_ORDER[match.group(1)]) if match else (2, tag, 0)


@TASKS.register("tagging", TaggingConfig)
class Tagging(Task):
    outputs_per_token = True
    pipeline_tag = "token-classification"
    stock_class = AutoModelForTokenClassification

    def stock_config(self, network_config: PretrainedConfig) -> PretrainedConfig:
        return labelled_config(super().stock_config(network_config), self.labels)

    def __init__(self, config: TaggingConfig, data: Any, tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__(config, data, tokenizer)
        self.labels: list[str] = list(config.labels) if config.labels else []
        self.scheme = config.scheme

    # -- what the data defines ------------------------------------------------
    def fit(self, train: Split) -> None:
        train.require_columns([self.data.text_column, self.data.label_column], ["data.text_column", "data.label_column"])
        if not self.labels:
            names = self._tag_names(train)
            seen = names or sorted({tag for tags in self._raw_tags(train) for tag in tags}, key=_tag_order)
            self.labels = list(seen)
        if self.config.label_pieces == "all":  # continuation pieces of B-X words are I-X
            extra = [f"I-{m.group(2)}" for m in map(ENTITY_TAG.match, self.labels) if m and m.group(1) == "B"]
            self.labels += [tag for tag in dict.fromkeys(extra) if tag not in self.labels]
        if len(self.labels) < 2:
            raise DataError(f"{train.origin}: column {self.data.label_column!r} has {len(self.labels)} distinct tag(s); tagging needs at least 2")
        if self.scheme == "auto":
            prefixes = {m.group(1) for m in map(ENTITY_TAG.match, self.labels) if m}
            self.scheme = "IOBES" if prefixes & {"E", "S"} else "IOB2" if prefixes else "none"

    def state_dict(self) -> dict[str, Any]:
        return {"labels": self.labels, "scheme": self.scheme}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.labels, self.scheme = list(state["labels"]), state["scheme"]

    # -- examples to tensors ----------------------------------------------------
    def _tag_names(self, split: Split) -> Optional[list[str]]:
        """Tag names of a Hub column of ClassLabel ids (a List/Sequence of ClassLabel)."""
        feature = split.dataset.features.get(self.data.label_column)
        return getattr(getattr(feature, "feature", None), "names", None)

    def _raw_tags(self, split: Split) -> list[list[str]]:
        names = self._tag_names(split)
        out = []
        for index, value in enumerate(list(split.dataset[self.data.label_column])):
            if isinstance(value, str):
                value = value.split()
            if not isinstance(value, (list, tuple)):
                raise DataError(f"{split.where(index)}: field {self.data.label_column!r} must be a list of tags, got {str(value)[:80]!r}")
            for position, tag in enumerate(value):
                if not (isinstance(tag, str) and tag.strip()) and not (isinstance(tag, (int, np.integer)) and not isinstance(tag, bool)):
                    raise DataError(f"{split.where(index, position)}: field {self.data.label_column!r}: each tag must be a non-empty text or a tag id, got {str(tag)[:40]!r}")
                if isinstance(tag, (int, np.integer)) and (tag < 0 or (names and tag >= len(names))):
                    allowed = f"0 to {len(names) - 1}" if names else "0 or more"
                    raise DataError(f"{split.where(index, position)}: field {self.data.label_column!r}: tag id {tag} is out of range (expected {allowed}; no tag marks an unlabelled token)")
            out.append([names[t] if names and isinstance(t, int) and 0 <= t < len(names) else str(t) for t in value])
        return out

    def _words(self, split: Split) -> list[list[str]]:
        column = self.data.text_column
        out = []
        for index, value in enumerate(list(split.dataset[column])):
            words = value.split() if isinstance(value, str) else value
            if not isinstance(words, (list, tuple)) or not all(isinstance(w, str) and w.strip() for w in words):
                raise DataError(f"{split.where(index)}: field {column!r} must be a list of non-empty tokens (or a whitespace-separated string), got {str(value)[:80]!r}")
            if not words:
                raise DataError(f"{split.where(index)}: empty sentence (no tokens in field {column!r})")
            out.append(list(words))
        return out

    def _tag_ids(self, split: Split, words: list[list[str]]) -> list[list[int]]:
        ids = {tag: i for i, tag in enumerate(self.labels)}
        out = []
        for index, (tags, sentence) in enumerate(zip(self._raw_tags(split), words)):
            if len(tags) != len(sentence):
                raise DataError(f"{split.where(index)}: {len(sentence)} tokens in {self.data.text_column!r} but {len(tags)} tags in {self.data.label_column!r}")
            for position, tag in enumerate(tags):
                if tag not in ids:
                    raise DataError(f"{split.where(index, position)}: tag {tag!r} is not one of the {len(self.labels)} tags {self.labels} (tags come from the training data or task.labels)")
            out.append([ids[tag] for tag in tags])
        return out

    def _pieces(self, words: list[list[str]]) -> tuple[list[list[list[int]]], list[int], list[int], Optional[int]]:
        """Pieces of every word (an unknown-token piece for a word the tokenizer drops),
        and the special tokens that wrap one sequence (prefix, suffix) with its type id."""
        try:
            probe = self.tokenizer([["a"]], is_split_into_words=True)
            encoded = self.tokenizer(words, is_split_into_words=True, add_special_tokens=False)
        except Exception as error:  # e.g. byte-level BPE without add_prefix_space
            raise ConfigError(f"model.checkpoint: its tokenizer cannot take pre-split words ({str(error).splitlines()[0][:160]})") from None
        content = [k for k, w in enumerate(probe.word_ids(0)) if w is not None]
        ids = probe["input_ids"][0]
        prefix, suffix = ids[: content[0]], ids[content[-1] + 1 :]
        type_id = probe["token_type_ids"][0][0] if "token_type_ids" in probe else None
        unk = self.tokenizer.unk_token_id if self.tokenizer.unk_token_id is not None else 0
        pieces = []
        for i, sentence in enumerate(words):
            per_word: list[list[int]] = [[] for _ in sentence]
            for piece, word in zip(encoded["input_ids"][i], encoded.word_ids(i)):
                if word is not None:
                    per_word[word].append(piece)
            pieces.append([p or [unk] for p in per_word])
        return pieces, prefix, suffix, type_id

    def encode(self, split: Split, with_labels: bool = True) -> EncodedDataset:
        columns = [self.data.text_column] + ([self.data.label_column] if with_labels else [])
        split.require_columns(columns, ["data.text_column", "data.label_column"][: len(columns)])
        words = self._words(split)
        tags = self._tag_ids(split, words) if with_labels else None
        pieces, prefix, suffix, type_id = self._pieces(words)
        budget = self.config.max_length - len(prefix) - len(suffix)
        continuation = self._continuation_ids()
        rows: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
        row_example, row_window, row_words = [], [], []
        for example, word_pieces in enumerate(pieces):
            clipped = [p[:budget] for p in word_pieces]
            for window in plan_windows([len(p) for p in clipped], budget, self.config.stride):
                ids, first_of, labels = list(prefix), [-1] * len(prefix), [IGNORE_INDEX] * len(prefix)
                for word in range(*window):
                    for k, piece in enumerate(clipped[word]):
                        ids.append(piece)
                        first_of.append(word if k == 0 else -1)
                        if tags is not None:
                            tag = tags[example][word]
                            labels.append(tag if k == 0 else continuation[tag] if continuation else IGNORE_INDEX)
                ids += suffix
                first_of += [-1] * len(suffix)
                labels += [IGNORE_INDEX] * len(suffix)
                rows["input_ids"].append(ids)
                rows["attention_mask"].append([1] * len(ids))
                rows["labels"].append(labels)
                row_example.append(example)
                row_window.append(window)
                row_words.append(np.asarray(first_of))
        if type_id is not None:
            rows["token_type_ids"] = [[type_id] * len(ids) for ids in rows["input_ids"]]
        if tags is None:
            del rows["labels"]
        meta = {"words": words, "tags": tags, "row_example": row_example, "row_window": row_window, "row_words": row_words}
        return EncodedDataset(rows, meta=meta)

    def _continuation_ids(self) -> Optional[list[int]]:
        """label_pieces=all: the tag id of a word's later pieces, by the word's tag id."""
        if self.config.label_pieces == "first":
            return None
        ids = {tag: i for i, tag in enumerate(self.labels)}
        return [ids.get("I-" + tag[2:], i) if tag.startswith("B-") else i for i, tag in enumerate(self.labels)]

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        extra = {"labels": pad_sequences([f["labels"] for f in features], IGNORE_INDEX)} if "labels" in features[0] else None
        return collate_tokens(features, self.tokenizer.pad_token_id or 0, extra)

    # -- the model on top of the encoder ----------------------------------------
    def build_head(self, backbone_config: PretrainedConfig, pooler: Optional[nn.Module]) -> nn.Module:
        dropout = head_dropout(backbone_config, self.config.classifier_dropout)
        return TokenTaggingHead(backbone_config.hidden_size, len(self.labels), dropout, initializer_range(backbone_config))

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        total, count = self.loss_sum(outputs, labels)
        return total / count.clamp(min=1.0)

    def loss_sum(self, outputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Shape: outputs [batch, seq, labels], labels [batch, seq] (IGNORE_INDEX where no tag is trained)
        flat = labels.reshape(-1)
        total = F.cross_entropy(outputs.float().reshape(-1, outputs.shape[-1]), flat, ignore_index=IGNORE_INDEX, reduction="sum")
        return total, (flat != IGNORE_INDEX).sum().float()

    # -- outputs to answers ----------------------------------------------------
    def word_scores(self, outputs: list[np.ndarray], data: EncodedDataset) -> list[np.ndarray]:
        """Per example, the tag logits of every word, each from its best-placed window. Shape: [words, labels]."""
        meta = data.meta
        scores = [np.zeros((len(words), len(self.labels)), dtype=np.float32) for words in meta["words"]]
        best = [np.full(len(words), -1) for words in meta["words"]]
        for row, logits in enumerate(outputs):
            example, window = meta["row_example"][row], meta["row_window"][row]
            positions = np.nonzero(meta["row_words"][row] >= 0)[0]
            for position in positions:
                word = meta["row_words"][row][position]
                room = context(word, window)
                if room > best[example][word]:
                    best[example][word] = room
                    scores[example][word] = logits[position]
        return scores

    @property
    def metric_names(self) -> tuple[str, ...]:
        return ("accuracy",) if self.scheme == "none" else ("f1", "precision", "recall", "accuracy")

    def compute_metrics(self, outputs: list[np.ndarray], data: EncodedDataset) -> dict[str, float]:
        predicted = [[self.labels[i] for i in s.argmax(-1)] for s in self.word_scores(outputs, data)]
        gold = [[self.labels[i] for i in tags] for tags in data.meta["tags"]]
        correct = sum(p == g for ps, gs in zip(predicted, gold) for p, g in zip(ps, gs))
        results = {"accuracy": correct / max(1, sum(len(g) for g in gold))}
        if self.scheme != "none":
            results.update(metrics.entity_scores(gold, predicted, self.scheme, self.config.strict))
        return results

    def baseline(self, data: EncodedDataset) -> Optional[Baseline]:
        """Every word the most common gold tag of this set (for entity schemes 'O': no entity, F1 0)."""
        gold = [[self.labels[i] for i in tags] for tags in data.meta["tags"]]
        _, common, total = most_common_share(t for tags in gold for t in tags)
        if not total:
            return None
        predicted = [[common] * len(tags) for tags in gold]
        scores = {"accuracy": sum(t == common for tags in gold for t in tags) / total}
        if self.scheme != "none":
            scores.update(metrics.entity_scores(gold, predicted, self.scheme, self.config.strict))
        return Baseline(f"the tag {common!r} for every word", {k: v for k, v in scores.items() if "/" not in k})

    def collapse(self, outputs: list[np.ndarray], data: EncodedDataset) -> Optional[str]:
        tags = [self.labels[i] for s in self.word_scores(outputs, data) for i in s.argmax(-1)]
        if self.scheme != "none" and len(data.meta["words"]) >= MIN_ROWS and tags and all(t == "O" for t in tags):
            return f"no entity in any of the {len(data.meta['words']):,} sentences (every word 'O')"
        return collapsed(tags, "predicted tags") if self.scheme == "none" else None

    def report(self, results: dict[str, float]) -> Optional[str]:
        return metrics.entity_table(results) if self.scheme != "none" else None

    def format_predictions(self, outputs: list[np.ndarray], data: EncodedDataset) -> list[dict[str, Any]]:
        answers = []
        for words, scores in zip(data.meta["words"], self.word_scores(outputs, data)):
            probs = softmax(scores, axis=-1)
            best = probs.argmax(-1)
            answers.append({"tokens": words, "tags": [self.labels[i] for i in best], "confidence": [round(float(p), 4) for p in probs.max(-1)]})
        return answers

    # -- prediction input and output ---------------------------------------------
    def examples_to_split(self, examples: Iterable[Union[str, Sequence[str], dict]]) -> Split:
        """Token lists, whitespace-separated sentences, or dicts with the run's token column."""
        column = self.data.text_column
        rows = [e.get(column) if isinstance(e, dict) else e.split() if isinstance(e, str) else list(e) for e in examples]
        return Split("input", datasets.Dataset.from_dict({column: rows}), "input")

    def prepare_input(self, split: Split) -> Split:
        return split.adopt_column(self.data.text_column, ("tokens", "text"))

    def write_predictions(self, split: Split, predictions: list[dict[str, Any]], path: Path) -> None:
        """CoNLL input: the same file with a predicted tag column; anything else: jsonl."""
        if split.format == "conll":
            write_conll(Path(split.origin), [p["tags"] for p in predictions], path)
        else:
            super().write_predictions(split, predictions, path)
