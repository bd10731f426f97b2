"""Offline metrics (scikit-learn, scipy): no Hub download, same numbers as the GLUE scripts."""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import stats
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
LOWER_IS_BETTER = {"mse", "loss"}


def compute(names: tuple[str, ...], table: dict[str, Callable], predictions: np.ndarray, references: np.ndarray) -> dict[str, float]:
    unknown = [name for name in names if name not in table]
    if unknown:
        raise ConfigError(f"task.metrics: unknown metric {unknown[0]!r}; choose from {', '.join(table)}")
    return {name: table[name](predictions, references) for name in names}


def greater_is_better(metric: str) -> bool:
    return metric.split("/")[-1] not in LOWER_IS_BETTER
