"""bert_tasks' metrics through the `evaluate` library: each module loads offline from the installed
package, accumulates with add_batch, and gives the numbers bert_tasks itself reports."""
from __future__ import annotations

import random

import evaluate
import numpy as np
import pytest
from conftest import DEMO_DATA, tiny_recipe

import bert_tasks
from bert_tasks import evaluate_metrics, metrics, squad_scoring
from bert_tasks.config import load_config
from bert_tasks.errors import ConfigError
from bert_tasks.evaluation import evaluate_run
from bert_tasks.generation_metrics import generation_scores


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may come from the Hub


def _in_batches(module, predictions, references, size=7, **kwargs):
    for start in range(0, len(predictions), size):
        module.add_batch(predictions=predictions[start:start + size], references=references[start:start + size])
    return module.compute(**kwargs)


def test_a_trained_runs_numbers_through_evaluate(tmp_path, tiny_checkpoint):
    summary = bert_tasks.train(load_config(tiny_recipe(tiny_checkpoint, tmp_path, data={"validation": str(DEMO_DATA / "validation.csv")},
                                                       train={"max_eval_samples": None, "learning_rate": 3e-3, "epochs": 2})))
    predictor = bert_tasks.load(summary.run_dir, device="cpu")
    split = predictor.read_input(DEMO_DATA / "validation.csv")
    labels = predictor.task.labels
    predicted = [labels.index(p["label"]) for p in predictor.predict_split(split)]
    gold = [labels.index(str(v)) for v in split.dataset["label"]]
    reported, _ = evaluate_run(summary.run_dir, device="cpu")
    module = evaluate.load(evaluate_metrics.metric_path("classification"))
    ours = _in_batches(module, predicted, gold, metrics=["accuracy", "f1"])
    assert ours["accuracy"] == pytest.approx(reported["accuracy"], abs=1e-12) and ours["f1"] == pytest.approx(reported["f1"], abs=1e-12)
    assert ours["accuracy"] == pytest.approx(summary.eval["accuracy"], abs=1e-12)


def test_glue_and_regression_modules_match_bert_tasks_metrics():
    rng = np.random.default_rng(0)
    predicted, gold = rng.integers(0, 2, 50).tolist(), rng.integers(0, 2, 50).tolist()
    mrpc = _in_batches(evaluate_metrics.load("glue", "mrpc"), predicted, gold)
    assert mrpc == {"accuracy": metrics.accuracy(np.array(predicted), np.array(gold)), "f1": metrics.f1_binary(np.array(predicted), np.array(gold))}
    assert _in_batches(evaluate_metrics.load("glue", "cola"), predicted, gold) == {"matthews": metrics.matthews(np.array(predicted), np.array(gold))}
    scores, targets = rng.uniform(0, 5, 40), rng.uniform(0, 5, 40)
    stsb = _in_batches(evaluate_metrics.load("glue", "stsb"), scores.tolist(), targets.tolist())
    assert stsb["pearson"] == pytest.approx(metrics.pearson(scores, targets), abs=1e-6)  # float32 storage inside evaluate
    assert stsb["spearman"] == pytest.approx(metrics.spearman(scores, targets), abs=1e-6)
    regression = _in_batches(evaluate_metrics.load("classification", "regression"), scores.tolist(), targets.tolist(), metrics=["mse"])
    assert regression == {"mse": pytest.approx(metrics.mse(scores, targets))}


def test_conlleval_module_matches_the_tagging_scores():
    rng = random.Random(0)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    gold = [[rng.choice(tags) for _ in range(rng.randint(3, 9))] for _ in range(30)]
    predicted = [[t if rng.random() < 0.7 else rng.choice(tags) for t in sentence] for sentence in gold]
    module = evaluate_metrics.load("conlleval")
    for p, g in zip(predicted, gold):
        module.add(predictions=p, references=g)
    results = module.compute(scheme="IOB2")
    expected = metrics.entity_scores(gold, predicted, "IOB2", strict=False)
    assert {k: results[k] for k in expected} == pytest.approx(expected)
    words = sum(map(len, gold))
    assert results["accuracy"] == sum(a == b for ps, gs in zip(predicted, gold) for a, b in zip(ps, gs)) / words
    assert "PER/f1" in results


def test_squad_modules_match_the_official_scoring():
    golds = [["paris"], ["new york", "york"], [], ["oslo"]]
    answers = ["paris", "york city", "", "cairo"]
    references = [{"id": f"q{i}", "answers": {"text": g, "answer_start": [0] * len(g)}} for i, g in enumerate(golds)]
    predictions = [{"id": f"q{i}", "prediction_text": a} for i, a in reversed(list(enumerate(answers)))]  # any order
    assert _in_batches(evaluate_metrics.load("squad"), predictions, references, size=3) == squad_scoring.squad_v1(answers, golds)
    null_diffs, spans = [-3.0, -1.0, 2.0, 0.5], ["paris", "york city", "oslo", "cairo"]
    v2 = [{**p, "null_diff": null_diffs[int(p["id"][1:])], "span_text": spans[int(p["id"][1:])]} for p in predictions]
    results = _in_batches(evaluate_metrics.load("squad_v2"), v2, references, size=2)
    assert results == pytest.approx(squad_scoring.squad_v2(answers, golds, null_diffs, spans))
    with pytest.raises(ValueError, match="no prediction for 1 questions"):
        evaluate_metrics.load("squad").compute(predictions=[*predictions[:3], {"id": "elsewhere", "prediction_text": ""}], references=references)


def test_generation_module_and_unknown_names():
    predictions = ["the cat sat on the mat .", "a dog ran", "hello there"]
    references = ["the cat is on the mat .", "the dog ran away", "hello"]
    results = _in_batches(evaluate_metrics.load("generation"), predictions, references, size=2)
    expected = generation_scores(predictions, references, [], ("rougeL", "rouge1", "rouge2", "rougeLsum", "bleu"))
    assert results == pytest.approx(expected)
    with pytest.raises(ConfigError, match="bert_tasks provides glue, classification"):
        evaluate_metrics.metric_path("bleurt")
