"""End-to-end runs of the one training loop on the tiny model: run directory, best checkpoint,
resume, early stopping, accumulation, prediction and evaluation through the API and the CLI."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import tiny_recipe
from safetensors.torch import load_file

import bert_tasks
from bert_tasks.checkpointing import checkpoint_dirs
from bert_tasks.cli import main
from bert_tasks.config import load_config
from bert_tasks.rundir import read_metrics


def _train(checkpoint, root, **sections):
    return bert_tasks.train(load_config(tiny_recipe(checkpoint, root, **sections)))


def test_run_directory_best_checkpoint_and_prediction(tmp_path, tiny_checkpoint):
    summary = _train(tiny_checkpoint, tmp_path, train={"epochs": 2, "eval_every": 3, "max_train_samples": 64})
    run = tmp_path / "run"
    for name in ("config.yaml", "task.json", "metrics.jsonl", "summary.json", "best/model.safetensors", "best/config.json", "best/tokenizer.json"):
        assert (run / name).is_file(), name
    events = read_metrics(run)
    evals = [e for e in events if e["event"] == "eval"]
    assert [e["step"] for e in evals] == [3, 6, 8]  # every 3 steps, plus the last step
    best = max(evals, key=lambda e: e["accuracy"])
    assert summary.best_value == pytest.approx(best["accuracy"]) and summary.best_step == best["step"]
    assert summary.trainable_parameters == summary.total_parameters > 0
    assert json.loads((run / "task.json").read_text())["labels"] == ["negative", "positive"]

    model = bert_tasks.load(run)
    predictions = model.predict(["The kettle is great.", "The train was late and dirty."])
    assert [set(p) for p in predictions] == [{"label", "scores"}] * 2
    assert all(abs(sum(p["scores"].values()) - 1) < 1e-4 for p in predictions)
    # the reloaded best model reproduces the best evaluation exactly
    results, _ = bert_tasks.evaluation.evaluate_run(run, ("train.max_eval_samples=40",))
    assert results["accuracy"] == pytest.approx(best["accuracy"])


def test_cli_train_evaluate_predict(tmp_path, tiny_checkpoint, capsys):
    recipe = tmp_path / "tiny.yaml"
    import yaml

    recipe.write_text(yaml.safe_dump(tiny_recipe(tiny_checkpoint, tmp_path / "runs")))
    assert main(["train", str(recipe), "output.name=cli", "train.max_train_samples=32"]) == 0
    run = tmp_path / "runs" / "cli"
    assert main(["evaluate", str(run), "train.max_eval_samples=16"]) == 0
    assert "accuracy" in json.loads(capsys.readouterr().out.split("run directory")[-1].split("\n", 1)[1])
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"text": "lovely quiet hotel"}\n{"text": "broken after a week"}\n')
    assert main(["predict", str(run), "--input", str(inputs), "--output", str(tmp_path / "out.jsonl")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["label"] in ("positive", "negative")
    # a finished run is not overwritten by accident
    assert main(["train", str(recipe), "output.name=cli"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["evaluate", str(run), "strategy.name=full"]) == 2


@pytest.mark.parametrize("task", ["classification", "mlm"])  # mlm: the masks of the resumed epoch are drawn again, the same
def test_resume_ends_with_the_same_weights(tmp_path, tiny_checkpoint, task):
    """Run A uninterrupted; B = A's directory cut back to a mid-epoch checkpoint, resumed."""
    sections = {"train": {"epochs": 2, "eval_every": 2, "save_every": 2, "keep_checkpoints": 0, "max_train_samples": 80}}
    if task == "mlm":
        sections["task"] = {"name": "mlm", "max_length": 32, "short_segment_share": 0.0}
    _train(tiny_checkpoint, tmp_path / "a", **sections)
    run_a = tmp_path / "a" / "run"
    steps = [int(p.name.split("-")[1]) for p in checkpoint_dirs(run_a)]
    assert steps[:5] == [2, 4, 6, 8, 10] and (task == "mlm" or len(steps) == 5)  # mlm: a long sentence may make two rows
    run_b = tmp_path / "b" / "run"
    shutil.copytree(run_a, run_b)
    for path in checkpoint_dirs(run_b)[1:]:  # keep only step 2: the middle of epoch 1 (5 steps per epoch)
        shutil.rmtree(path)
    (run_b / "summary.json").unlink()
    summary = _train(tiny_checkpoint, tmp_path / "b", **{**sections, "train": {**sections["train"], "resume": True}})
    assert summary.steps == steps[-1]
    final_a = load_file(str(checkpoint_dirs(run_a)[-1] / "model.safetensors"))
    final_b = load_file(str(checkpoint_dirs(run_b)[-1] / "model.safetensors"))
    assert final_a.keys() == final_b.keys()
    for name in final_a:
        assert torch.equal(final_a[name], final_b[name]), name


def test_early_stopping(tmp_path, tiny_checkpoint):
    summary = _train(
        tiny_checkpoint, tmp_path,
        train={"epochs": 20, "eval_every": 1, "early_stopping_patience": 2, "learning_rate": 0.0, "gradient_accumulation_steps": 2, "max_train_samples": 64},
    )
    # learning rate 0: nothing improves after the first evaluation, so 2 more evaluations stop the run
    assert summary.steps == 3 and summary.best_step == 1
    train_events = [e for e in read_metrics(tmp_path / "run") if e["event"] == "eval"]
    assert len(train_events) == 3


def _final_weights(checkpoint, root, **train):
    """Train the tiny model (no dropout, no evaluation: best/ holds the last weights) and return them."""
    settings = {"epochs": 2, "learning_rate": 1e-3, "max_train_samples": 64, "group_by_length": False, "warmup_steps": 2, **train}
    summary = _train(checkpoint, root, data={"validation": None}, train=settings)
    return summary, load_file(str(root / "run" / "best" / "model.safetensors"))


def test_gradient_accumulation_equals_one_big_batch(tmp_path, tiny_checkpoint_no_dropout):
    """2 micro-batches of 8 accumulated make the same optimiser steps as batches of 16: same rows
    (no length grouping), same mean gradient, so the same weights up to float rounding."""
    accumulated_summary, accumulated = _final_weights(tiny_checkpoint_no_dropout, tmp_path / "a", batch_size=8, gradient_accumulation_steps=2)
    big_summary, big = _final_weights(tiny_checkpoint_no_dropout, tmp_path / "b", batch_size=16)
    start = load_file(str(tiny_checkpoint_no_dropout / "model.safetensors"))
    assert accumulated_summary.steps == big_summary.steps == 8  # 64 rows / 16 per step x 2 epochs
    moved = max((big[name] - start[name[len("backbone."):]]).abs().max().item() for name in big if name.startswith("backbone.") and name[len("backbone."):] in start)
    assert moved > 1e-3  # a real learning rate: the weights travel far beyond the tolerance below
    for name in big:
        torch.testing.assert_close(accumulated[name], big[name], rtol=0, atol=1e-6)  # measured: ~6e-8


def test_tensorboard_tracker(tmp_path, tiny_checkpoint):
    pytest.importorskip("tensorboard")
    _train(tiny_checkpoint, tmp_path, train={"log_with": "tensorboard", "log_every": 1, "max_train_samples": 32})
    assert list((tmp_path / "run").rglob("events.out.tfevents.*"))


def test_bf16_mixed_precision_tracks_fp32(tmp_path, tiny_checkpoint_no_dropout):
    """bf16 autocast trains to nearly the numbers fp32 does (bf16 keeps ~3 significant digits,
    the master weights stay float32), yet not bit-identically: bf16 really ran. Measured on the tiny
    model: eval loss within 2e-6, class probabilities within 2e-5, weights within 3e-3; the
    tolerances below leave room for other CPUs."""
    runs = {}
    for precision in ("no", "bf16"):
        root = tmp_path / precision
        summary = _train(tiny_checkpoint_no_dropout, root, train={"mixed_precision": precision, "max_train_samples": 64, "max_eval_samples": 32, "group_by_length": False})
        model = bert_tasks.load(root / "run")
        runs[precision] = (summary, model.predict(["the staff were friendly and quick", "it broke after two days", "fine"]),
                           load_file(str(root / "run" / "best" / "model.safetensors")))
    (fp32, fp32_predictions, fp32_weights), (bf16, bf16_predictions, bf16_weights) = runs["no"], runs["bf16"]
    assert all(w.dtype == torch.float32 for w in bf16_weights.values())  # master weights stay float32
    assert bf16.eval["loss"] == pytest.approx(fp32.eval["loss"], abs=5e-3)
    for ours, reference in zip(bf16_predictions, fp32_predictions):
        assert ours["scores"] == pytest.approx(reference["scores"], abs=5e-3)
    drift = max((bf16_weights[name] - fp32_weights[name]).abs().max().item() for name in fp32_weights)
    assert 0 < drift < 0.02, drift


def test_sentence_pair_regression_end_to_end(tmp_path, tiny_checkpoint, pair_data):
    summary = _train(
        tiny_checkpoint, tmp_path,
        task={"problem": "regression", "metrics": ["pearson", "spearman"]},
        data={"dataset": None, "train": str(pair_data["train"]), "validation": str(pair_data["validation"]),
              "text_column": "first", "text_pair_column": "second", "label_column": "score"},
        train={"epochs": 2},
    )
    assert summary.best_metric == "pearson" and set(summary.eval) == {"pearson", "spearman", "loss"}
    model = bert_tasks.load(summary.run_dir)
    scores = model.predict([("The kettle is great.", "Lovely hotel."), ("Broken strap.", "Great bike.")])
    assert [set(s) for s in scores] == [{"score"}, {"score"}]
    with pytest.raises(bert_tasks.BertTasksError, match="this model reads sentence pairs"):
        model.predict(["only one text"])
