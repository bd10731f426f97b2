"""Several named evaluation sets per run: metric names, best-metric selection, per-set columns, the model
card's model-index, `evaluate` on new sets keeping what the run tuned, and 2 processes against 1."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import DEMO_DATA, make_ner_files, make_qa_files, make_seq2seq_files, ner_recipe_sections, qa_recipe_sections, seq2seq_recipe_sections, tiny_recipe, write_csv

import bert_tasks
from bert_tasks.config import load_config
from bert_tasks.errors import ConfigError, DataError
from bert_tasks.evaluation import evaluate_run
from bert_tasks.metrics import greater_is_better
from bert_tasks.publishing import publish
from bert_tasks.rundir import TASK_FILE, open_run, read_metrics
from bert_tasks.summary import RunSummary, format_table

DEMO_VALIDATION = str(DEMO_DATA / "validation.csv")

# task -> (recipe sections, the run's validation source)
TASKS = {
    "classification": lambda folder: ({"data": {"validation": DEMO_VALIDATION}}, DEMO_VALIDATION),
    "tagging": lambda folder: (sections := ner_recipe_sections(make_ner_files(folder)), sections["data"]["validation"]),
    "span_qa": lambda folder: (sections := qa_recipe_sections(make_qa_files(folder, unanswerable=0.3), version_2=True), sections["data"]["validation"]),
    "seq2seq": lambda folder: (sections := seq2seq_recipe_sections(make_seq2seq_files(folder), max_new_tokens=6), sections["data"]["validation"]),
    "mlm": lambda folder: ({"task": {"name": "mlm", "max_length": 32}, "data": {"validation": DEMO_VALIDATION}}, DEMO_VALIDATION),
}


def _recipe(checkpoint: Path, tmp_path: Path, task: str, sets: dict, **train) -> dict:
    sections, _ = TASKS[task](tmp_path)
    sections = {**sections, "data": {**sections.get("data", {}), "validation": sets}}
    return tiny_recipe(checkpoint, tmp_path / "runs", train={"max_eval_samples": 24, **train}, **sections)


@pytest.mark.parametrize("count", [2, 3])
@pytest.mark.parametrize("task", list(TASKS))
def test_named_sets_for_every_task(tmp_path, tiny_checkpoint, task, count):
    _, source = TASKS[task](tmp_path)
    sets = {"full": source, "head": f"{source}[0:9]", "tail": f"{source}[9:]"}
    names = list(sets)[:count]
    best = "tail/loss" if count == 3 else None  # three sets: the checkpoint is picked on the last set's loss
    config = load_config(_recipe(tiny_checkpoint, tmp_path, task, {n: sets[n] for n in names}, best_metric=best, eval_every=3))
    summary = bert_tasks.train(config)
    metric_names = open_run(config.run_dir).task.metric_names
    main = metric_names[0]
    assert summary.eval_sets == names
    evals = [record for record in read_metrics(config.run_dir) if record["event"] == "eval"]
    assert summary.best_metric == (best or f"full/{main}")  # default: the first set's main metric
    chosen = next(record for record in evals if record["step"] == summary.best_step)
    metric = summary.best_metric
    assert summary.best_value == chosen[metric] == summary.eval[metric]
    if greater_is_better(metric):
        assert all(record[metric] <= chosen[metric] for record in evals)
    else:
        assert all(record[metric] >= chosen[metric] for record in evals)
    for record in evals:
        for name in names:
            assert {f"{name}/{m}" for m in (*metric_names, "loss")} <= set(record)
        assert not any(key in record for key in (*metric_names, "loss"))  # no plain names beside the named ones
    assert {k: v for k, v in chosen.items() if "/" in k} == summary.eval
    # the two sets really are scored apart: 9 rows against 24
    if task == "classification":
        assert summary.eval["full/loss"] != summary.eval["head/loss"]
    assert "head/" + metric.split("/")[1] in format_table([summary])  # a column per other set

    card = (publish(config.run_dir, tmp_path / "published").folder / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    results = meta["model-index"][0]["results"]
    assert [r["dataset"]["split"] for r in results] == [sets[n] for n in names]
    for result, name in zip(results, names):
        values = {m["name"]: m["value"] for m in result["metrics"]}
        assert values[main] == pytest.approx(summary.eval[f"{name}/{main}"])
        assert not any("/" in key and key.split("/")[0] in names for key in values)
    assert f"| head | {main} |" in card


def test_three_sets_best_checkpoint_by_any_set_metric(tmp_path, tiny_checkpoint):
    sets = {"a": DEMO_VALIDATION, "b": f"{DEMO_VALIDATION}[0:12]", "c": f"{DEMO_VALIDATION}[12:30]"}
    config = load_config(_recipe(tiny_checkpoint, tmp_path, "classification", sets, epochs=3, eval_every=2, max_eval_samples=None, best_metric="c/loss"))
    summary = bert_tasks.train(config)
    evals = [record for record in read_metrics(config.run_dir) if record["event"] == "eval"]
    assert len(evals) >= 4
    lowest = min(evals, key=lambda record: record["c/loss"])
    assert summary.best_metric == "c/loss" and summary.best_step == lowest["step"] and summary.best_value == lowest["c/loss"]
    assert summary.eval == {k: v for k, v in lowest.items() if "/" in k}
    assert {"a/accuracy", "b/accuracy", "c/accuracy"} <= set(summary.eval)
    header, _, row = format_table([summary]).splitlines()
    assert {"a/loss", "b/loss"} <= set(header.split()) and "c/loss" in row.split()  # the best metric, and the same on the other sets
    # a plain metric with named sets is the first set's
    plain = _recipe(tiny_checkpoint, tmp_path, "classification", sets, best_metric="accuracy")
    plain["output"]["name"] = "plain"
    assert bert_tasks.train(load_config(plain)).best_metric == "a/accuracy"


def test_a_set_with_its_own_column_names_scores_like_the_same_rows_under_the_run_names(tmp_path, tiny_checkpoint):
    with open(DEMO_VALIDATION) as handle:
        rows = list(csv.DictReader(handle))
    renamed = write_csv(tmp_path / "other.csv", [{"review": r["text"], "gold": r["label"], "extra": "x"} for r in rows])
    sets = {"same": DEMO_VALIDATION, "other": {"source": str(renamed), "text_column": "review", "label_column": "gold"}}
    summary = bert_tasks.train(load_config(_recipe(tiny_checkpoint, tmp_path, "classification", sets)))
    assert summary.eval["other/accuracy"] == summary.eval["same/accuracy"]
    assert summary.eval["other/loss"] == pytest.approx(summary.eval["same/loss"], abs=1e-6)


@pytest.mark.parametrize("sets, best, expected", [
    ({"a/b": DEMO_VALIDATION}, None, "data.validation.a/b: a set name is letters"),
    ({"loss": DEMO_VALIDATION}, None, "data.validation.loss: a set name is"),
    ({"a": {"source": DEMO_VALIDATION, "colour": "red"}}, None, "data.validation.a.colour: unknown key; a set takes source"),
    ({"a": {"text_column": "text"}}, None, "data.validation.a.source: expected a file or Hub split name"),
    ({"a": DEMO_VALIDATION}, "z/accuracy", "train.best_metric='z/accuracy': no evaluation set 'z'; the sets are a"),
    ({"a": DEMO_VALIDATION}, "a/bleu", "train.best_metric='a/bleu': the task reports accuracy"),
    ({"a": {"source": DEMO_VALIDATION, "text_column": "review"}}, None, "missing column 'review' (set by data.validation.a)"),
])
def test_bad_sets_fail_in_one_line_naming_the_key(tmp_path, tiny_checkpoint, sets, best, expected):
    with pytest.raises((ConfigError, DataError)) as caught:
        bert_tasks.train(load_config(_recipe(tiny_checkpoint, tmp_path, "classification", sets, best_metric=best)))
    assert expected in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "runs" / "run").exists()  # nothing is left behind by a run that never started


def test_evaluate_on_two_new_sets_applies_the_tuned_qa_threshold(tmp_path, tiny_checkpoint):
    files = make_qa_files(tmp_path, unanswerable=0.3)
    recipe = tiny_recipe(tiny_checkpoint, tmp_path / "runs", train={"epochs": 2}, **qa_recipe_sections(files, version_2=True))
    summary = bert_tasks.train(load_config(recipe))
    run = Path(summary.run_dir)
    saved = (run / TASK_FILE).read_bytes()
    tuned = json.loads(saved)["null_threshold"]
    assert tuned == summary.eval["best_f1_thresh"]
    sets = f"data.validation={{again: {files['validation']}, part: '{files['validation']}[0:10]'}}"
    results, table = evaluate_run(run, (sets,))
    # the training's own validation set, scored at the adopted threshold, gives the training's best F1
    assert results["again/f1"] == pytest.approx(summary.eval["best_f1"], abs=1e-9)
    assert {"part/f1", "part/HasAns_f1", "part/loss"} <= set(results)
    assert f"no-answer threshold applied: {tuned:.4f}" in table and table.count("no-answer threshold applied") == 2
    assert (run / TASK_FILE).read_bytes() == saved  # evaluation changes nothing in the run
    # asked for another threshold: applied, for this evaluation only
    never_null, _ = evaluate_run(run, (sets, "task.null_threshold=1e9"))
    assert never_null["again/NoAns_f1"] == 0.0
    with pytest.raises(Exception, match="evaluate accepts data.*task.n_best, task.null_threshold"):
        evaluate_run(run, ("task.max_length=48",))


def _evaluate_json(command: list[str], cwd: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    text = done.stdout[done.stdout.index("{"):]
    return json.loads(text[: text.index("\n}") + 2])


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classification", "tagging"])
def test_two_process_evaluation_of_several_sets_equals_one(tmp_path, tiny_checkpoint_no_dropout, task):
    _, source = TASKS[task](tmp_path)
    summary = bert_tasks.train(load_config(_recipe(tiny_checkpoint_no_dropout, tmp_path, task, source)))
    # 41, 17 and 5 rows: none divides by 2 processes x batch 8, so padding added by gathering must go
    sets = f"data.validation={{a: '{source}', b: '{source}[3:20]', c: '{source}[20:25]'}}"
    command = ["-m", "bert_tasks", "evaluate", summary.run_dir, sets, "train.max_eval_samples=41", "train.eval_batch_size=8", "--device", "cpu"]
    one = _evaluate_json([sys.executable, *command], tmp_path)
    two = _evaluate_json([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541", *command], tmp_path)
    assert set(one) == set(two) and {"a/loss", "b/loss", "c/loss"} <= set(one)
    for key in one:
        assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-5), key


def test_the_zero_shot_recipe_scores_each_language_from_its_own_hub_config():
    from bert_tasks.eval_sets import eval_sets

    config = load_config("xnli_zero_shot")
    sets = eval_sets(config.data)
    assert [s.name for s in sets][:3] == ["en", "de", "fr"] and config.train.best_metric == "en/accuracy"
    assert {s.name: s.read["dataset_config"] for s in sets}["de"] == "de" and sets[0].read["dataset_config"] == "en"
    assert all(s.read["dataset"] == "xnli" for s in sets)


def test_compare_reports_the_metric_on_every_set(tmp_path, tiny_checkpoint, monkeypatch):
    from bert_tasks.comparison import compare

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    recipe = _recipe(tiny_checkpoint, tmp_path, "classification", {"dev": DEMO_VALIDATION, "part": f"{DEMO_VALIDATION}[0:10]"})
    recipe["compare"] = {"seeds": [1], "name": "grid", "strategies": [{"name": "last_n", "n": 1, "learning_rates": [1e-3]}]}
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(recipe))
    root = compare(path)
    summary = RunSummary.load(next((root / "cells").rglob("summary.json")).parent)
    with (root / "report.csv").open() as handle:
        row = next(csv.DictReader(handle))
    assert float(row["metric_mean"]) == pytest.approx(summary.eval["dev/accuracy"], abs=1e-4)
    assert float(row["part/accuracy"]) == pytest.approx(summary.eval["part/accuracy"], abs=1e-4)
    assert "| dev/accuracy (mean ± std) | seeds | part/accuracy |" in (root / "report.md").read_text()


def test_each_set_gets_its_own_frozen_store_and_the_same_scores_as_uncached(tmp_path, tiny_checkpoint_no_dropout):
    sets = {"dev": DEMO_VALIDATION, "part": f"{DEMO_VALIDATION}[0:10]"}
    scores = {}
    for cache in (True, False):
        recipe = _recipe(tiny_checkpoint_no_dropout, tmp_path, "classification", sets, cache_frozen=cache, cache_dir=str(tmp_path / "cache"))
        recipe["strategy"] = {"name": "last_n", "n": 1}
        recipe["output"]["name"] = f"cache-{cache}"
        summary = bert_tasks.train(load_config(recipe))
        scores[cache] = summary.eval
        if cache:
            assert summary.frozen_cache["cached"] and {"train", "validation.dev", "validation.part"} <= set(summary.frozen_cache)
            assert summary.frozen_cache["validation.part"]["rows"] == 10 and len(summary.frozen_stores) == 3
    assert scores[True] == pytest.approx(scores[False], abs=1e-4)
