"""Trivial baselines and collapse warnings: each task's baseline scored by its own metrics, each kind of
collapse named (crafted outputs on real task objects), and a run that learned nothing says so in its
progress, metrics.jsonl, summary and model card."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_qa_files, make_seq2seq_files, ner_recipe_sections, qa_recipe_sections, seq2seq_recipe_sections, tiny_recipe

import bert_tasks
from bert_tasks.assembly import prepare_task
from bert_tasks.config import load_config
from bert_tasks.sanity import Baseline, baseline_of, first_line, learning_warnings


def _task_and_validation(checkpoint, tmp_path, **sections):
    config = load_config(tiny_recipe(checkpoint, tmp_path / "runs", **sections))
    task, splits = prepare_task(config)
    return task, task.encode(splits["validation"])


def test_classification_baseline_is_the_training_majority_and_one_class_is_a_collapse(tmp_path, tiny_checkpoint):
    task, data = _task_and_validation(tiny_checkpoint, tmp_path, train={"max_eval_samples": None})
    labels = np.asarray(data.columns["labels"])
    baseline = task.baseline(data)
    assert baseline.name == f"majority class {task.majority!r} of the training data"
    assert baseline.scores["accuracy"] == pytest.approx(float(np.mean(labels == task.labels.index(task.majority))))
    one_class = [np.array([0.0, 3.0]) for _ in labels]
    assert task.collapse(one_class, data) == f"100% of {len(labels)} predicted classes are the same ('{task.labels[1]}')"
    right = [np.eye(2)[label] for label in labels]
    assert task.collapse(right, data) is None
    notes = learning_warnings(task, one_class, data, task.compute_metrics(one_class, data))
    assert notes[0].startswith("predictions collapsed: 100% of") and "does not beat the trivial baseline" in notes[1]
    assert learning_warnings(task, right, data, task.compute_metrics(right, data)) == []


def test_regression_collapse_is_a_constant_score(tmp_path, tiny_checkpoint):
    rows = [{"sentence": f"text {i}", "score": float(i % 5)} for i in range(40)]
    path = tmp_path / "scores.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task, data = _task_and_validation(tiny_checkpoint, tmp_path, task={"name": "classification", "problem": "regression", "max_length": 16},
                                      data={"dataset": None, "train": str(path), "validation": str(path), "text_column": "sentence", "label_column": "score"})
    assert task.baseline(data) is None  # a constant correlates with nothing
    assert "every score is about 2.0000" in task.collapse([np.array([2.0]) for _ in rows], data)
    assert task.collapse([np.array([float(i % 5)]) for i in range(40)], data) is None


def test_qa_baseline_is_no_answer_and_empty_or_identical_answers_collapse(tmp_path, tiny_checkpoint):
    task, data = _task_and_validation(tiny_checkpoint, tmp_path, **qa_recipe_sections(make_qa_files(tmp_path, unanswerable=0.3), version_2=True))
    golds = data.meta["golds"]
    unanswerable = sum(not any(g) for g in golds) / len(golds)
    baseline = task.baseline(data)
    assert baseline.scores["f1"] == pytest.approx(100 * unanswerable) and baseline.scores["best_f1"] == baseline.scores["f1"]
    widths = [len(data[i]["input_ids"]) for i in range(len(data))]
    null_wins = [np.stack([np.r_[9.0, np.zeros(w - 1)], np.r_[9.0, np.zeros(w - 1)]], axis=-1) for w in widths]  # [CLS] scores best
    assert task.collapse(null_wins, data) == f"every one of the {len(golds)} answers is empty (no answer)"
    assert "does not beat the trivial baseline" in " ".join(learning_warnings(task, null_wins, data, task.compute_metrics(null_wins, data)))


def test_tagging_baseline_is_no_entity_and_all_o_is_a_collapse(tmp_path, tiny_checkpoint, ner_data):
    task, data = _task_and_validation(tiny_checkpoint, tmp_path, **ner_recipe_sections(ner_data))
    baseline = task.baseline(data)
    assert baseline.name == "the tag 'O' for every word" and baseline.scores["f1"] == 0.0
    o = task.labels.index("O")
    all_o = [np.tile(np.eye(len(task.labels))[o], (len(row["input_ids"]), 1)) for row in (data[i] for i in range(len(data)))]
    assert task.collapse(all_o, data).startswith("no entity in any of the")


def test_seq2seq_baseline_is_the_first_line_and_identical_texts_collapse(tmp_path, tiny_checkpoint):
    task, data = _task_and_validation(tiny_checkpoint, tmp_path, **seq2seq_recipe_sections(make_seq2seq_files(tmp_path)))
    baseline = task.baseline(data)
    assert baseline.name == "the first line of each source" and 0.0 <= baseline.scores["rougeL"] <= 100.0
    ids = task.tokenizer("a positive review", add_special_tokens=False)["input_ids"]
    same = [np.array([1.0, 1.0, *ids, task.end_id], dtype=np.float32) for _ in range(len(data))]
    assert task.collapse(same, data) == f"100% of {len(data)} generated texts are the same ('a positive review')"
    assert first_line("Amanda: hi\nTom: hello") == "Amanda: hi" and first_line("One. Two three.") == "One."


def test_a_run_that_learned_nothing_says_so_everywhere(tmp_path, tiny_checkpoint, capsys):
    recipe = tiny_recipe(tiny_checkpoint, tmp_path / "runs", train={"learning_rate": 1e-9, "max_eval_samples": None})
    summary = bert_tasks.train(load_config(recipe))
    out = capsys.readouterr()
    assert "trivial baseline, majority class" in out.err
    assert "bert-tasks: warning: validation: predictions collapsed:" in out.out
    run = tmp_path / "runs" / "run"
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    assert any("predictions collapsed" in w for w in evals[-1]["warnings"])
    saved = json.loads((run / "summary.json").read_text())
    assert saved["baselines"]["validation"]["name"].startswith("majority class") and "accuracy" in saved["baselines"]["validation"]
    assert saved["warnings"] == summary.warnings and summary.warnings
    bert_tasks.publish(run, tmp_path / "published")
    text = (tmp_path / "published" / "README.md").read_text()
    assert "Trivial baseline on `validation` (majority class" in text and "**Warning** (last evaluation)" in text


def test_baselines_are_computed_once_per_data_set(tmp_path, tiny_checkpoint):
    task, data = _task_and_validation(tiny_checkpoint, tmp_path)
    first = baseline_of(task, data)
    assert isinstance(first, Baseline) and baseline_of(task, data) is first
