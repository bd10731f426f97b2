"""Tagging metrics as bert_tasks' tagging task reports them: word accuracy and entity precision, recall
and F1 (micro) with per-type TYPE/precision, TYPE/recall, TYPE/f1, TYPE/support. Predictions and
references are tag sequences (one list of tags per sentence); compute(..., scheme='IOB2',
strict=False): conlleval's rules unless strict (seqeval's strict mode under the scheme)."""
import datasets
import evaluate

from bert_tasks import metrics as bert_metrics


class Conlleval(evaluate.Metric):
    def _info(self):
        tags = datasets.Sequence(datasets.Value("string"))
        return evaluate.MetricInfo(
            description=__doc__, citation="Tjong Kim Sang and De Meulder, 2003 (conlleval); Nakayama, 2018 (seqeval)",
            inputs_description="predictions, references: one list of tags per sentence",
            features=datasets.Features({"predictions": tags, "references": tags}),
        )

    def _compute(self, predictions, references, scheme="IOB2", strict=False):
        words = sum(len(r) for r in references)
        for index, (p, r) in enumerate(zip(predictions, references)):
            if len(p) != len(r):
                raise ValueError(f"sentence {index}: {len(p)} predicted tags for {len(r)} words")
        correct = sum(a == b for ps, rs in zip(predictions, references) for a, b in zip(ps, rs))
        results = {"accuracy": correct / max(1, words)}
        if scheme != "none":
            results.update(bert_metrics.entity_scores([list(r) for r in references], [list(p) for p in predictions], scheme, strict))
        return results
