"""Offline metrics against values computed by hand."""
from __future__ import annotations

import numpy as np
import pytest

from bert_tasks import metrics


def test_classification_metrics_by_hand():
    predictions = np.array([1, 1, 0, 0, 1, 0])
    references = np.array([1, 0, 0, 1, 1, 0])
    # TP=2 FP=1 FN=1 TN=2
    assert metrics.accuracy(predictions, references) == pytest.approx(4 / 6)
    assert metrics.f1_binary(predictions, references) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert metrics.matthews(predictions, references) == pytest.approx((2 * 2 - 1 * 1) / np.sqrt(3 * 3 * 3 * 3))
    # macro F1 over classes 0 and 1: both have F1 2/3
    assert metrics.f1_macro(predictions, references) == pytest.approx(2 / 3)


def test_regression_metrics_by_hand():
    predictions = np.array([1.0, 2.0, 3.0, 4.0])
    references = np.array([2.0, 4.0, 6.0, 9.0])
    assert metrics.spearman(predictions, references) == pytest.approx(1.0)
    x, y = predictions - predictions.mean(), references - references.mean()
    assert metrics.pearson(predictions, references) == pytest.approx((x * y).sum() / np.sqrt((x**2).sum() * (y**2).sum()))
    assert metrics.mse(predictions, references) == pytest.approx((1 + 4 + 9 + 25) / 4)
    assert metrics.pearson(np.ones(4), references) == 0.0  # constant predictions: 0, not NaN
