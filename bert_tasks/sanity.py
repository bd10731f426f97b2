"""Has the model learned anything? Each task scores a trivial answer it can compute itself (the majority
class, no answer to every question, the first line of each source) with its own metrics, and says when
its predictions collapse (one class for nearly every row, the same answer everywhere). After each
evaluation a one-line warning names what collapsed, or that the main metric does not beat the baseline.

Why: a run that learned nothing still prints plausible numbers (SQuAD v2 at 49.8 F1 by answering
nothing, an imbalanced set at 0.68 accuracy by always saying the majority class); without the
baseline beside it, nothing in the output says so.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Hashable, Iterable, Optional

import numpy as np

from .metrics import greater_is_better

COLLAPSE_SHARE = 0.95  # predictions that are one value for at least this share of rows have collapsed
MIN_ROWS = 20  # fewer rows than this say too little to call a collapse


@dataclass(frozen=True)
class Baseline:
    name: str  # what the trivial answer is, in words: "majority class 'positive'"
    scores: dict[str, float]  # under the task's own metric names

    def describe(self, metric_names: Iterable[str]) -> str:
        shown = [f"{name} {self.scores[name]:.4f}" for name in metric_names if name in self.scores]
        return f"{self.name}: {', '.join(shown)}" if shown else self.name


def most_common_share(values: Iterable[Hashable]) -> tuple[float, Any, int]:
    """(share of the most common value, that value, how many values)."""
    counts = Counter(values)
    total = sum(counts.values())
    if not total:
        return 0.0, None, 0
    value, count = counts.most_common(1)[0]
    return count / total, value, total


def collapsed(values: list[Hashable], what: str) -> Optional[str]:
    """'97% of 872 predictions are 'positive'' when one value fills COLLAPSE_SHARE of enough rows."""
    share, value, total = most_common_share(values)
    if total < MIN_ROWS or share < COLLAPSE_SHARE:
        return None
    shown = repr(value) if not isinstance(value, str) or len(value) <= 60 else repr(value[:57] + "...")
    return f"{share:.0%} of {total:,} {what} are the same ({shown})"


def first_line(text: str) -> str:
    """A text's first non-empty line; a one-line text's first sentence."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1:
        return lines[0]
    one = lines[0] if lines else ""
    match = re.search(r"(?<=[.!?])\s+(?=[A-Z0-9\"'])", one)
    return one[: match.start()] if match else one


def baseline_of(task: Any, data: Any) -> Optional[Baseline]:
    """The task's trivial baseline on ``data``, computed once per data set."""
    cached = getattr(data, "trivial_baseline", False)
    if cached is False:
        cached = task.baseline(data)
        try:
            data.trivial_baseline = cached
        except AttributeError:
            pass
    return cached


def learning_warnings(task: Any, outputs: list[np.ndarray], data: Any, results: dict[str, float]) -> list[str]:
    """What to warn about after one evaluation of one set: a collapse, a main metric at or below its baseline."""
    notes = []
    collapse = task.collapse(outputs, data)
    if collapse:
        notes.append(f"predictions collapsed: {collapse}")
    baseline = baseline_of(task, data)
    metric = task.metric_names[0]
    if baseline is not None and metric in baseline.scores and metric in results:
        value, base = results[metric], baseline.scores[metric]
        beaten = value > base if greater_is_better(metric) else value < base
        if not beaten:
            notes.append(f"{metric} {value:.4f} does not beat the trivial baseline {base:.4f} ({baseline.name})")
    return notes
