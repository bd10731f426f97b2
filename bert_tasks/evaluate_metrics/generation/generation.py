"""Generated-text metrics as bert_tasks' seq2seq task reports them (0-100): ROUGE-1/2/L/Lsum (mean
F-measure, Porter stemming) and sacreBLEU. compute(..., metrics=[...]) picks them (default:
rougeL, rouge1, rouge2, rougeLsum, bleu); predictions and references are texts."""
import datasets
import evaluate

from bert_tasks.generation_metrics import generation_scores

DEFAULT = ("rougeL", "rouge1", "rouge2", "rougeLsum", "bleu")


class Generation(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="Lin, 2004 (ROUGE); Post, 2018 (sacreBLEU)", inputs_description="predictions, references: texts",
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, metrics=None):
        names = tuple(metrics or DEFAULT)
        if "gen_len" in names:
            raise ValueError("gen_len counts generated tokens, which texts do not carry; bert_tasks reports it in training")
        return generation_scores(predictions, references, [], names)
