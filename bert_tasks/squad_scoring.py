"""SQuAD scoring as the official v1.1 and v2.0 evaluation scripts define it (our own code).

An answer is normalised before comparison: lower-cased, punctuation removed, the articles
"a", "an", "the" removed, whitespace collapsed. Exact match is 1 when the normalised
strings are equal; F1 is over the bag of normalised tokens. Each question takes the best
score over its gold answers. In v2.0 a question without an answer has the gold answer
"" (only an empty prediction scores), and the scores are also reported for answerable
(HasAns) and unanswerable (NoAns) questions separately; ``best_exact`` / ``best_f1`` are
the scores at the no-answer threshold that maximises them.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from typing import Optional, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:  # v2.0: an empty answer matches only an empty answer
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def best_over_gold(prediction: str, golds: Sequence[str]) -> tuple[float, float]:
    """(exact match, F1) of one prediction against the best of its gold answers; no gold answers = unanswerable."""
    golds = [g for g in golds if normalize_answer(g)] or [""]
    return max(exact_match(prediction, g) for g in golds), max(token_f1(prediction, g) for g in golds)


def squad_v1(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """Exact match and F1 in percent, as the v1.1 script prints them."""
    scores = [best_over_gold(p, g) for p, g in zip(predictions, golds)]
    count = max(1, len(scores))
    return {"exact_match": 100.0 * sum(s[0] for s in scores) / count, "f1": 100.0 * sum(s[1] for s in scores) / count}


def _best_threshold(scores: list[float], null_diffs: list[float], answerable: list[bool]) -> tuple[float, float]:
    """The v2.0 script's search: answering "" whenever null_diff > threshold, which threshold
    maximises the total score? ``scores``: each question's score when answered with its best
    span. Starts from all-empty answers (right for every unanswerable question) and switches
    questions to their span in order of null_diff. Returns (best score in percent, threshold).
    When all-empty answers score best, the threshold lies below every null_diff, so applying it
    gives that score (the official script returns 0.0 there, which does not)."""
    current = best = float(sum(not has for has in answerable))
    threshold = min(null_diffs) - 1.0 if null_diffs else 0.0
    for index in sorted(range(len(scores)), key=lambda i: null_diffs[i]):
        # from here on this question is answered with its best span instead of ""
        if answerable[index]:
            current += scores[index]
        else:
            current += scores[index] - 1.0
        if current > best:
            best, threshold = current, null_diffs[index]
    return 100.0 * best / max(1, len(scores)), threshold


def squad_v2(predictions: Sequence[str], golds: Sequence[Sequence[str]], null_diffs: Optional[Sequence[float]] = None,
             spans: Optional[Sequence[str]] = None) -> dict[str, float]:
    """v2.0 scores in percent: overall, HasAns / NoAns, and (with ``null_diffs``: null score minus
    best span score, per question; ``spans``: the best non-empty span) best_exact / best_f1 with thresholds."""
    answerable = [any(normalize_answer(g) for g in gold) for gold in golds]
    scores = [best_over_gold(p, g) for p, g in zip(predictions, golds)]
    count = max(1, len(scores))
    out = {"exact": 100.0 * sum(s[0] for s in scores) / count, "f1": 100.0 * sum(s[1] for s in scores) / count, "total": float(len(scores))}
    for name, wanted in (("HasAns", True), ("NoAns", False)):
        chosen = [s for s, has in zip(scores, answerable) if has == wanted]
        if chosen:
            out[f"{name}_exact"] = 100.0 * sum(s[0] for s in chosen) / len(chosen)
            out[f"{name}_f1"] = 100.0 * sum(s[1] for s in chosen) / len(chosen)
            out[f"{name}_total"] = float(len(chosen))
    if null_diffs is not None and spans is not None:
        span_scores = [best_over_gold(s, g) for s, g in zip(spans, golds)]
        for key, index in (("exact", 0), ("f1", 1)):
            best, threshold = _best_threshold([s[index] for s in span_scores], list(null_diffs), answerable)
            out[f"best_{key}"], out[f"best_{key}_thresh"] = best, threshold
    return out


def in_reference_order(predictions: Sequence[dict], references: Sequence[dict]) -> tuple[list[dict], list[list[str]]]:
    """``evaluate``-style inputs ({id, prediction_text, ...}, {id, answers: {text: [...]}}) as the
    predictions in the references' order and each question's gold texts; every reference needs a prediction."""
    by_id = {p["id"]: p for p in predictions}
    missing = [r["id"] for r in references if r["id"] not in by_id]
    if missing:
        raise ValueError(f"no prediction for {len(missing)} questions (first: {missing[0]!r})")
    return [by_id[r["id"]] for r in references], [list(r["answers"]["text"]) for r in references]
