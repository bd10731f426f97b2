"""Offline metrics (scikit-learn, scipy, seqeval): no Hub download, same numbers as the GLUE
scripts and conlleval."""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import stats
from seqeval import metrics as seqeval_metrics
from seqeval import scheme as seqeval_scheme
from sklearn import metrics as skm

from .errors import ConfigError


def accuracy(predictions: np.ndarray, references: np.ndarray) -> float:
    return float(np.mean(predictions == references))


def f1_binary(predictions: np.ndarray, references: np.ndarray) -> float:
    """F1 of the positive class (label id 1), as GLUE reports for MRPC and QQP."""
    return float(skm.f1_score(references, predictions, average="binary", pos_label=1, zero_division=0))


def f1_macro(predictions: np.ndarray, references: np.ndarray) -> float:
    return float(skm.f1_score(references, predictions, average="macro", zero_division=0))


def matthews(predictions: np.ndarray, references: np.ndarray) -> float:
    return float(skm.matthews_corrcoef(references, predictions))


def _constant(values: np.ndarray) -> bool:
    return bool(np.all(values == values.flat[0]))


def pearson(predictions: np.ndarray, references: np.ndarray) -> float:
    """Pearson's r; 0.0 (not NaN) when either side is constant, e.g. an untrained model."""
    if _constant(predictions) or _constant(references):
        return 0.0
    return float(stats.pearsonr(predictions, references)[0])


def spearman(predictions: np.ndarray, references: np.ndarray) -> float:
    if _constant(predictions) or _constant(references):
        return 0.0
    return float(stats.spearmanr(predictions, references)[0])


def mse(predictions: np.ndarray, references: np.ndarray) -> float:
    return float(np.mean((predictions - references) ** 2))


CLASSIFICATION_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy,
    "f1": f1_binary,
    "f1_macro": f1_macro,
    "matthews": matthews,
}
REGRESSION_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "pearson": pearson,
    "spearman": spearman,
    "mse": mse,
}
LOWER_IS_BETTER = {"mse", "loss", "perplexity", "mlm_loss", "sentence_loss"}


def compute(names: tuple[str, ...], table: dict[str, Callable], predictions: np.ndarray, references: np.ndarray) -> dict[str, float]:
    unknown = [name for name in names if name not in table]
    if unknown:
        raise ConfigError(f"task.metrics: unknown metric {unknown[0]!r}; choose from {', '.join(table)}")
    return {name: table[name](predictions, references) for name in names}


def greater_is_better(metric: str) -> bool:
    return metric.split("/")[-1] not in LOWER_IS_BETTER


ENTITY_SCHEMES = ("IOB1", "IOB2", "IOBES")


def entity_scores(gold: list[list[str]], predicted: list[list[str]], scheme: str, strict: bool) -> dict[str, float]:
    """Entity-level precision / recall / F1 (micro over all entities) and the same per entity type.

    ``strict=False`` follows conlleval (an ``I-X`` after ``O`` starts an entity; the
    scheme only names the tags); ``strict=True`` uses seqeval's strict mode, where an
    entity counts only if its tags are valid under ``scheme``. Per-type keys are
    ``TYPE/precision``, ``TYPE/recall``, ``TYPE/f1``, ``TYPE/support`` (gold entities).
    """
    options = {"mode": "strict", "scheme": getattr(seqeval_scheme, scheme)} if strict else {}
    report = seqeval_metrics.classification_report(gold, predicted, output_dict=True, zero_division=0, **options)
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    scores = {"f1": float(micro["f1-score"]), "precision": float(micro["precision"]), "recall": float(micro["recall"])}
    for kind, row in sorted(report.items()):
        if kind.endswith(" avg"):
            continue
        scores.update({f"{kind}/precision": float(row["precision"]), f"{kind}/recall": float(row["recall"]),
                       f"{kind}/f1": float(row["f1-score"]), f"{kind}/support": float(row["support"])})
    return scores


def entity_table(results: dict[str, float]) -> str:
    """The per-type rows of ``entity_scores`` as an aligned text table."""
    kinds = sorted({key.split("/")[0] for key in results if key.endswith("/f1")})
    lines = [f"{'type':<10}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for kind in kinds:
        lines.append(f"{kind:<10}{results[kind + '/precision']:>10.4f}{results[kind + '/recall']:>10.4f}"
                     f"{results[kind + '/f1']:>10.4f}{int(results[kind + '/support']):>10d}")
    if "f1" in results:
        lines.append(f"{'all':<10}{results['precision']:>10.4f}{results['recall']:>10.4f}{results['f1']:>10.4f}"
                     f"{int(sum(results[k + '/support'] for k in kinds)):>10d}")
    return "\n".join(lines)
