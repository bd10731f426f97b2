"""SQuAD v1.1 exact match and F1 (percent), as the official script and bert_tasks' QA task compute them.
predictions: {"id", "prediction_text"}; references: {"id", "answers": {"text": [...], "answer_start": [...]}}."""
import datasets
import evaluate

from bert_tasks import squad_scoring

PREDICTION = {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")}
REFERENCE = {"id": datasets.Value("string"), "answers": datasets.Sequence({"text": datasets.Value("string"), "answer_start": datasets.Value("int32")})}


class Squad(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="Rajpurkar et al., 2016, SQuAD: 100,000+ Questions for Machine Comprehension of Text",
            inputs_description="predictions: id, prediction_text; references: id, answers",
            features=datasets.Features({"predictions": PREDICTION, "references": REFERENCE}),
        )

    def _compute(self, predictions, references):
        ordered, golds = squad_scoring.in_reference_order(predictions, references)
        return squad_scoring.squad_v1([p["prediction_text"] for p in ordered], golds)
