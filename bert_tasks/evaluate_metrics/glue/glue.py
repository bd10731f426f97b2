"""GLUE metrics as bert_tasks reports them: config_name is the task (cola, sst2, mrpc, stsb, qqp, mnli,
mnli_matched, mnli_mismatched, qnli, rte, wnli, ax). Predictions and references are label ids
(STS-B: scores). Results: cola matthews; mrpc and qqp accuracy, f1 (of label 1); stsb pearson,
spearman; the others accuracy; fractions, not percent."""
import datasets
import evaluate
import numpy as np

from bert_tasks import metrics as bert_metrics

TASK_METRICS = {
    "cola": ("matthews",), "sst2": ("accuracy",), "mrpc": ("accuracy", "f1"), "qqp": ("accuracy", "f1"), "stsb": ("pearson", "spearman"),
    "mnli": ("accuracy",), "mnli_matched": ("accuracy",), "mnli_mismatched": ("accuracy",), "qnli": ("accuracy",), "rte": ("accuracy",),
    "wnli": ("accuracy",), "ax": ("accuracy",),
}


class Glue(evaluate.Metric):
    def _info(self):
        if self.config_name not in TASK_METRICS:
            raise KeyError(f"config_name {self.config_name!r}: choose a GLUE task, one of {', '.join(TASK_METRICS)}")
        kind = datasets.Value("float32" if self.config_name == "stsb" else "int64")
        return evaluate.MetricInfo(
            description=__doc__, citation="Wang et al., 2018, GLUE: A Multi-Task Benchmark and Analysis Platform for Natural Language Understanding",
            inputs_description="predictions, references: label ids (STS-B: similarity scores)",
            features=datasets.Features({"predictions": kind, "references": kind}),
        )

    def _compute(self, predictions, references):
        names = TASK_METRICS[self.config_name]
        table = bert_metrics.REGRESSION_METRICS if self.config_name == "stsb" else bert_metrics.CLASSIFICATION_METRICS
        return bert_metrics.compute(names, table, np.asarray(predictions), np.asarray(references))
