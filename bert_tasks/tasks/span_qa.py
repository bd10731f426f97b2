"""Extractive question answering (SQuAD v1.1 / v2.0), as in the BERT paper: a start vector and
an end vector are dotted with every token's output; softmax over positions; the best span
(start <= end, inside the context, at most ``max_answer_length`` tokens) is the answer.

Input: ``[CLS] question [SEP] context [SEP]``; only the context is truncated, into
overlapping windows (``doc_stride`` tokens shared, the transformers meaning). Training
points start/end at the answer's tokens, or at [CLS] when the window does not hold the
answer or the question has none (v2.0). Decoding takes the n-best spans over all windows
of a question; in v2.0 the answer is "" when the null score beats the best span by more
than ``null_threshold`` (None: the threshold that maximised F1 on the evaluation set).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import softmax
from torch import nn
from transformers import AutoModelForQuestionAnswering, PretrainedConfig, PreTrainedTokenizerBase

from .. import squad_scoring
from ..batching import EncodedDataset, collate_tokens
from ..data import Split
from ..errors import ConfigError, DataError
from ..ranges import check_range
from ..squad_format import is_offset
from ..atomic_files import replacing
from ..registry import TASKS
from ..sanity import MIN_ROWS, Baseline, collapsed
from .base import Task, initializer_range
from .span_decoding import best_spans

MASKED = -1e4  # logit of padding positions: never a start or an end
NO_SPAN = 1e9  # null_diff of a question with no valid span at all


@dataclass(frozen=True)
class SpanQAConfig:
    name: str = "span_qa"
    version_2: bool = False  # SQuAD v2.0: some questions have no answer in the context
    max_length: int = 384  # tokens per window: [CLS] question [SEP] context part [SEP]
    doc_stride: int = 128  # context tokens shared by neighbouring windows
    max_question_length: int = 64  # longer questions are cut to this many tokens
    max_answer_length: int = 30  # tokens
    n_best: int = 20  # candidate starts and ends per window, and spans kept per question
    null_threshold: Optional[float] = None  # v2.0: answer "" when null - best span > this; None: tuned on evaluation

    def validate(self) -> None:
        check_range("task.max_length", self.max_length, 32)
        check_range("task.max_question_length", self.max_question_length, 1)
        check_range("task.null_threshold", self.null_threshold)
        if self.max_question_length + 16 > self.max_length:
            raise ConfigError(f"task.max_question_length={self.max_question_length}: leaves too little room in max_length={self.max_length} for the context")
        if not 0 <= self.doc_stride < self.max_length - self.max_question_length - 3:
            raise ConfigError(f"task.doc_stride={self.doc_stride}: must be below the context room per window ({self.max_length - self.max_question_length - 3})")
        if self.n_best < 1 or self.max_answer_length < 1:
            raise ConfigError("task.n_best and task.max_answer_length: must be 1 or more")


class SpanHead(nn.Module):
    """A linear layer giving each token a start and an end score (as BertForQuestionAnswering)."""

    def __init__(self, hidden_size: int, init_std: float) -> None:
        super().__init__()
        self.qa_outputs = nn.Linear(hidden_size, 2)
        nn.init.normal_(self.qa_outputs.weight, std=init_std)
        nn.init.zeros_(self.qa_outputs.bias)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = self.qa_outputs(hidden)  # Shape: [batch, seq, 2] (start, end)
        return logits.masked_fill(attention_mask.unsqueeze(-1) == 0, MASKED)


@TASKS.register("span_qa", SpanQAConfig)
class SpanQA(Task):
    outputs_per_token = True
    pipeline_tag = "question-answering"
    stock_class = AutoModelForQuestionAnswering
    decoding_keys = ("null_threshold", "n_best", "max_answer_length")

    def __init__(self, config: SpanQAConfig, data: Any, tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__(config, data, tokenizer)
        self.null_threshold = config.null_threshold if config.null_threshold is not None else 0.0

    @property
    def columns(self) -> tuple[str, str, str]:
        """(question, context, answers) columns: data.text_column, text_pair_column, label_column."""
        return self.data.text_column, self.data.text_pair_column or "context", self.data.label_column

    def input_column(self, key: str) -> Optional[str]:
        return {"text_column": self.columns[0], "text_pair_column": self.columns[1]}.get(key, super().input_column(key))

    # -- what the data defines ------------------------------------------------
    def fit(self, train: Split) -> None:
        question, context, answers = self.columns
        train.require_columns([question, context, answers], ["data.text_column", "data.text_pair_column", "data.label_column"])

    def state_dict(self) -> dict[str, Any]:
        return {"version_2": self.config.version_2, "null_threshold": self.null_threshold}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The threshold the run tuned, unless this task's config gives one (``evaluate RUN task.null_threshold=X``)."""
        if self.config.null_threshold is None:
            self.null_threshold = float(state.get("null_threshold", 0.0))

    def adopt_evaluation(self, results: dict[str, float]) -> None:
        """v2.0 without a fixed threshold: keep the one that maximised F1 on the evaluation set."""
        if self.config.version_2 and self.config.null_threshold is None and "best_f1_thresh" in results:
            self.null_threshold = results["best_f1_thresh"]

    # -- examples to tensors ----------------------------------------------------
    def _texts(self, split: Split, column: str) -> list[str]:
        values = list(split.dataset[column])
        for index, value in enumerate(values):
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{split.where(index)}: field {column!r} must be non-empty text, got {str(value)[:60]!r}")
        return values

    def _answers(self, split: Split, contexts: list[str]) -> tuple[list[list[str]], list[Optional[tuple[int, int]]]]:
        """Gold texts per question and the character span trained on (None: no answer). Every
        answer must be text found in the context at its answer_start: a shifted offset would train
        on the wrong words without a sign."""
        column, context_column = self.columns[2], self.columns[1]
        texts, spans = [], []
        for index, (value, context) in enumerate(zip(list(split.dataset[column]), contexts)):
            where = split.where(index)
            if isinstance(value, list) and all(isinstance(a, dict) for a in value):  # SQuAD style: [{text, answer_start}, ...]
                value = {"text": [a.get("text") for a in value], "answer_start": [a.get("answer_start") for a in value]}
            golds, starts = (value.get("text"), value.get("answer_start")) if isinstance(value, dict) else (None, None)
            if not isinstance(golds, list) or not isinstance(starts, list) or len(golds) != len(starts):
                raise DataError(f"{where}: field {column!r} must be {{'text': [...], 'answer_start': [...]}} with one start per text, got {str(value)[:80]!r}")
            for text, start in zip(golds, starts):
                if not isinstance(text, str) or not text:
                    raise DataError(f"{where}: field {column!r}: an answer text must be non-empty text, got {str(text)[:40]!r}")
                if not is_offset(start):
                    raise DataError(f"{where}: field {column!r}: answer_start must be a whole number of characters (0 or more), got {start!r}")
                if context[start : start + len(text)] != text:
                    raise DataError(
                        f"{where}: answer {text[:40]!r} is not in field {context_column!r} at answer_start={start} "
                        f"(the context there reads {context[start : start + len(text)][:40]!r})"
                    )
            if not golds and not self.config.version_2:
                raise DataError(f"{where}: no answer; unanswerable questions need task.version_2=true")
            texts.append(list(golds))
            spans.append((starts[0], starts[0] + len(golds[0])) if golds else None)
        return texts, spans

    def _cut_questions(self, questions: list[str]) -> list[str]:
        """Questions longer than max_question_length tokens lose their tail (the context must fit)."""
        encoded = self.tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
        limit = self.config.max_question_length
        return [q if len(offsets) <= limit else q[: offsets[limit - 1][1]] for q, offsets in zip(questions, encoded["offset_mapping"])]

    def encode(self, split: Split, with_labels: bool = True) -> EncodedDataset:
        question_column, context_column, answer_column = self.columns
        split.require_columns([question_column, context_column] + ([answer_column] if with_labels else []),
                              ["data.text_column", "data.text_pair_column", "data.label_column"][: 3 if with_labels else 2])
        questions = self._cut_questions([q.lstrip() for q in self._texts(split, question_column)])
        contexts = self._texts(split, context_column)
        golds, spans = self._answers(split, contexts) if with_labels else (None, None)
        encoded = self.tokenizer(
            questions, contexts, truncation="only_second", max_length=self.config.max_length, stride=self.config.doc_stride,
            return_overflowing_tokens=True, return_offsets_mapping=True,
        )
        rows: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
        if "token_type_ids" in encoded:
            rows["token_type_ids"] = []
        row_example, row_offsets = [], []
        for row, example in enumerate(encoded["overflow_to_sample_mapping"]):
            in_context = np.array([s == 1 for s in encoded.sequence_ids(row)])
            offsets = np.where(in_context[:, None], np.array(encoded["offset_mapping"][row]), -1)  # Shape: [seq, 2]
            label = _token_span(offsets, spans[example]) if with_labels else (0, 0)
            for name in rows:
                if name != "labels":
                    rows[name].append(encoded[name][row])
            rows["labels"].append(label)
            row_example.append(example)
            row_offsets.append(offsets)
        if not with_labels:
            del rows["labels"]
        meta = {"row_example": row_example, "row_offsets": row_offsets, "contexts": contexts, "golds": golds, "ids": self._ids(split)}
        return EncodedDataset(rows, meta=meta)

    def _ids(self, split: Split) -> list[str]:
        if "id" in split.dataset.column_names:
            ids = [str(i) for i in split.dataset["id"]]
            if len(set(ids)) != len(ids):  # the {id: answer} predictions would silently keep one of each
                first: dict[str, int] = {}
                for index, question_id in enumerate(ids):
                    if question_id in first:
                        raise DataError(f"{split.where(index)}: id {question_id!r} is already used at {split.where(first[question_id])}; question ids must be unique")
                    first[question_id] = index
            return ids
        return [str(i + 1) for i in range(len(split))]

    def collate(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        extra = {"labels": torch.tensor([f["labels"] for f in features], dtype=torch.long)} if "labels" in features[0] else None
        return collate_tokens(features, self.tokenizer.pad_token_id or 0, extra)

    # -- the model on top of the encoder ----------------------------------------
    def build_head(self, backbone_config: PretrainedConfig, pooler: Optional[nn.Module]) -> nn.Module:
        return SpanHead(backbone_config.hidden_size, initializer_range(backbone_config))

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # Shape: outputs [batch, seq, 2], labels [batch, 2] (start, end token; 0 = [CLS] = no answer here)
        outputs = outputs.float()
        return (F.cross_entropy(outputs[..., 0], labels[:, 0]) + F.cross_entropy(outputs[..., 1], labels[:, 1])) / 2

    # -- outputs to answers ----------------------------------------------------
    def decode(self, outputs: list[np.ndarray], data: EncodedDataset) -> list[dict[str, Any]]:
        """Per question: best span text, n-best list, and (v2.0) null score minus best span score."""
        meta = data.meta
        windows: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in meta["contexts"]]
        for row, logits in enumerate(outputs):
            windows[meta["row_example"][row]].append((logits, meta["row_offsets"][row]))
        answers = []
        for context, question_windows in zip(meta["contexts"], windows):
            spans, null = best_spans(question_windows, self.config.n_best, self.config.max_answer_length)
            scores = np.array([s.score for s in spans] + ([null] if self.config.version_2 else []))
            probs = softmax(scores) if len(scores) else scores
            nbest = [{"text": context[s.start : s.end], "probability": round(float(p), 6), "start": s.start, "end": s.end} for s, p in zip(spans, probs)]
            span_text = nbest[0]["text"] if nbest else ""
            null_diff = null - spans[0].score if spans else NO_SPAN
            answer = "" if self.config.version_2 and null_diff > self.null_threshold else span_text
            answers.append({"answer": answer, "span": span_text, "null_diff": float(null_diff), "nbest": nbest})
        return answers

    @property
    def metric_names(self) -> tuple[str, ...]:
        if self.config.version_2:
            return ("best_f1", "best_exact", "f1", "exact", "HasAns_f1", "NoAns_f1")
        return ("f1", "exact_match")

    def compute_metrics(self, outputs: list[np.ndarray], data: EncodedDataset) -> dict[str, float]:
        decoded = self.decode(outputs, data)
        golds = data.meta["golds"]
        if not self.config.version_2:
            return squad_scoring.squad_v1([d["answer"] for d in decoded], golds)
        return squad_scoring.squad_v2([d["answer"] for d in decoded], golds, [d["null_diff"] for d in decoded], [d["span"] for d in decoded])

    def baseline(self, data: EncodedDataset) -> Optional[Baseline]:
        """No answer to any question: v1.1 scores 0; v2.0 scores the share of unanswerable questions."""
        golds = data.meta["golds"]
        empty = [""] * len(golds)
        if not self.config.version_2:
            return Baseline("no answer to any question", squad_scoring.squad_v1(empty, golds))
        scores = squad_scoring.squad_v2(empty, golds)
        scores.update(best_f1=scores["f1"], best_exact=scores["exact"])
        return Baseline("no answer to any question", scores)

    def collapse(self, outputs: list[np.ndarray], data: EncodedDataset) -> Optional[str]:
        answers = [d["answer"] for d in self.decode(outputs, data)]
        if len(answers) >= MIN_ROWS and not any(answers):
            return f"every one of the {len(answers):,} answers is empty (no answer)"
        return collapsed([a for a in answers if a], "non-empty answers")

    def report(self, results: dict[str, float]) -> Optional[str]:
        """v2.0: the no-answer threshold the scores used, and the one this set's scores would pick."""
        if not self.config.version_2 or "best_f1_thresh" not in results:
            return None
        return (f"no-answer threshold applied: {self.null_threshold:.4f} (f1 {results['f1']:.2f}); best on this set: "
                f"{results['best_f1_thresh']:.4f} (best_f1 {results['best_f1']:.2f}; apply it with task.null_threshold=...)")

    def format_predictions(self, outputs: list[np.ndarray], data: EncodedDataset) -> list[dict[str, Any]]:
        answers = []
        for question_id, decoded in zip(data.meta["ids"], self.decode(outputs, data)):
            row = {"id": question_id, "answer": decoded["answer"], "nbest": decoded["nbest"]}
            if self.config.version_2:
                row["null_diff"] = round(decoded["null_diff"], 4)
            answers.append(row)
        return answers

    # -- prediction input and output ---------------------------------------------
    def examples_to_split(self, examples: Iterable[Union[Sequence[str], dict]]) -> Split:
        """(question, context) pairs or dicts with the run's question and context columns."""
        question_column, context_column, _ = self.columns
        rows: dict[str, list] = {question_column: [], context_column: []}
        for example in examples:
            question, context = (example.get(question_column), example.get(context_column)) if isinstance(example, dict) else tuple(example)
            rows[question_column].append(question)
            rows[context_column].append(context)
        return Split("input", datasets.Dataset.from_dict(rows), "input")

    def write_predictions(self, split: Split, predictions: list[dict[str, Any]], path: Path) -> None:
        """SQuAD JSON input: the official {id: answer} file plus PATH.nbest.json; else jsonl."""
        if split.format != "squad":
            return super().write_predictions(split, predictions, path)
        nbest = Path(path).with_suffix(".nbest.json")
        if nbest.resolve() == Path(split.origin).resolve():
            raise DataError(f"--output={str(path)!r}: its n-best file {str(nbest)!r} would overwrite the input; give another name")
        with replacing(Path(path)) as answers, replacing(nbest) as candidates:
            answers.write_text(json.dumps({p["id"]: p["answer"] for p in predictions}, indent=1, ensure_ascii=False), encoding="utf-8")
            candidates.write_text(json.dumps({p["id"]: p["nbest"] for p in predictions}, ensure_ascii=False), encoding="utf-8")


def _token_span(offsets: np.ndarray, span: Optional[tuple[int, int]]) -> tuple[int, int]:
    """Token positions of a character span inside one window, or (0, 0) ([CLS]) when the
    window does not hold all of it. Shape: offsets [seq, 2], -1 outside the context."""
    if span is None:
        return 0, 0
    start_char, end_char = span
    context = np.nonzero(offsets[:, 0] >= 0)[0]
    if not len(context) or offsets[context[0], 0] > start_char or offsets[context[-1], 1] < end_char:
        return 0, 0
    starts = context[offsets[context, 0] <= start_char]  # tokens beginning at or before the answer start
    ends = context[offsets[context, 1] >= end_char]  # tokens ending at or after the answer end
    return int(starts[-1]), int(ends[0])
