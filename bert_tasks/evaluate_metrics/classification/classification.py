"""Sentence (pair) classification and regression metrics as bert_tasks' classification task reports them.
config_name 'default' (label ids) or 'regression' (scores); compute(..., metrics=[...]) picks them
(default: accuracy and f1, or pearson and spearman)."""
import datasets
import evaluate
import numpy as np

from bert_tasks import metrics as bert_metrics


class Classification(evaluate.Metric):
    def _info(self):
        kind = datasets.Value("float64" if self.config_name == "regression" else "int64")
        return evaluate.MetricInfo(
            description=__doc__, citation="", inputs_description="predictions, references: label ids (regression: numbers); metrics: names",
            features=datasets.Features({"predictions": kind, "references": kind}),
        )

    def _compute(self, predictions, references, metrics=None):
        regression = self.config_name == "regression"
        table = bert_metrics.REGRESSION_METRICS if regression else bert_metrics.CLASSIFICATION_METRICS
        names = tuple(metrics or (("pearson", "spearman") if regression else ("accuracy", "f1")))
        return bert_metrics.compute(names, table, np.asarray(predictions), np.asarray(references))
