"""From start/end logits to answer spans: n-best over all windows of a question.

A span's score is its start logit plus its end logit; it must lie inside the context with
start <= end and at most ``max_answer_length`` tokens. Per window all such spans form a
[seq, max_answer_length] band of the start x end matrix, scored at once with NumPy, so the
n-best is exact (not only among the top-k starts and ends) without a Python loop over pairs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class Span:
    score: float  # start logit + end logit
    start: int  # character offsets into the context
    end: int


def window_spans(logits: np.ndarray, offsets: np.ndarray, n_best: int, max_answer_length: int) -> list[Span]:
    """The exact n-best spans of one window. Shape: logits [seq, 2], offsets [seq, 2] (-1 outside the context).

    Every allowed span is (start i, length d) with d < max_answer_length, so all their scores
    fit one [seq, max_answer_length] matrix ``start[i] + end[i + d]``; the n best are taken
    with argpartition. Same answer as the loop over pairs, without a Python loop.
    """
    in_context = offsets[:, 0] >= 0
    if not in_context.any():
        return []
    start_scores = np.where(in_context, logits[:, 0], -np.inf).astype(np.float64)
    end_scores = np.where(in_context, logits[:, 1], -np.inf).astype(np.float64)
    seq = len(offsets)
    ends = np.arange(seq)[:, None] + np.arange(max_answer_length)[None, :]  # Shape: [seq, max_answer_length]
    inside = ends < seq
    scores = start_scores[:, None] + np.where(inside, end_scores[np.minimum(ends, seq - 1)], -np.inf)  # Shape: [seq, max_answer_length]
    flat = scores.ravel()
    finite = int(np.isfinite(flat).sum())
    if finite == 0:
        return []
    k = min(n_best, finite)
    top = np.argpartition(-flat, k - 1)[:k]
    top = top[np.argsort(-flat[top], kind="stable")]
    starts, lengths = np.divmod(top, max_answer_length)
    return [Span(float(flat[t]), int(offsets[i, 0]), int(offsets[i + d, 1])) for t, i, d in zip(top, starts, lengths)]


def window_spans_by_pairs(logits: np.ndarray, offsets: np.ndarray, n_best: int, max_answer_length: int) -> list[Span]:
    """The same answer by looping over every (start, end) pair: the reference the benchmark times."""
    context = [i for i in range(len(offsets)) if offsets[i, 0] >= 0]
    spans = []
    for i in context:
        for j in context:
            if i <= j < i + max_answer_length:
                spans.append(Span(float(logits[i, 0] + logits[j, 1]), int(offsets[i, 0]), int(offsets[j, 1])))
    spans.sort(key=lambda s: -s.score)
    return spans[:n_best]


def best_spans(windows: Sequence[tuple[np.ndarray, np.ndarray]], n_best: int, max_answer_length: int, by_pairs: bool = False) -> tuple[list[Span], float]:
    """n-best distinct spans over all windows of one question, and its null score: the lowest
    [CLS] start + end score of any window (the window most sure that there is an answer)."""
    find = window_spans_by_pairs if by_pairs else window_spans
    spans: dict[tuple[int, int], Span] = {}
    null = np.inf
    for logits, offsets in windows:
        null = min(null, float(logits[0, 0] + logits[0, 1]))
        for span in find(logits, offsets, n_best, max_answer_length):
            key = (span.start, span.end)
            if key not in spans or span.score > spans[key].score:
                spans[key] = span
    ranked = sorted(spans.values(), key=lambda s: -s.score)[:n_best]
    return ranked, null
