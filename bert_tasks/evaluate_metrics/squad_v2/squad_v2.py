"""SQuAD v2.0 scores (percent), as the official script and bert_tasks' QA task compute them: exact, f1,
HasAns_* / NoAns_*, and with each prediction's null_diff (null score minus best span score) and
span_text (its best non-empty span) best_exact / best_f1 with their thresholds.
predictions: {"id", "prediction_text", "null_diff", "span_text"}; references as for SQuAD v1.1 (no answers: unanswerable)."""
import datasets
import evaluate

from bert_tasks import squad_scoring

PREDICTION = {"id": datasets.Value("string"), "prediction_text": datasets.Value("string"), "null_diff": datasets.Value("float64"), "span_text": datasets.Value("string")}
REFERENCE = {"id": datasets.Value("string"), "answers": datasets.Sequence({"text": datasets.Value("string"), "answer_start": datasets.Value("int32")})}


class SquadV2(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="Rajpurkar et al., 2018, Know What You Don't Know: Unanswerable Questions for SQuAD",
            inputs_description="predictions: id, prediction_text, null_diff, span_text; references: id, answers",
            features=datasets.Features({"predictions": PREDICTION, "references": REFERENCE}),
        )

    def _compute(self, predictions, references):
        ordered, golds = squad_scoring.in_reference_order(predictions, references)
        return squad_scoring.squad_v2([p["prediction_text"] for p in ordered], golds, [p["null_diff"] for p in ordered], [p["span_text"] for p in ordered])
