"""bert-tasks compare: a strategy x learning-rate x seed grid of real (tiny) runs, resumable, with a report."""
from __future__ import annotations

import csv
import json
import statistics

import pytest
import yaml
from conftest import tiny_recipe

from bert_tasks.cli import main
from bert_tasks.comparison import load_comparison
from bert_tasks.errors import ConfigError
from bert_tasks.summary import RunSummary


@pytest.mark.slow
def test_compare_runs_the_grid_resumes_and_reports(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    recipe = tiny_recipe(tiny_checkpoint, tmp_path / "runs", train={"epochs": 1, "max_train_samples": 64, "max_eval_samples": 32})
    recipe["compare"] = {"seeds": [1, 2], "name": "grid", "strategies": [
        {"name": "full", "learning_rates": [1e-3]},
        {"name": "last_n", "n": 1, "learning_rates": [3e-4, 3e-3]},
    ]}
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["compare", str(path)]) == 0
    root = tmp_path / "runs" / "grid"
    comparison = load_comparison(path)
    assert len(comparison.cells) == 6 and all((comparison.run_dir(c) / "summary.json").is_file() for c in comparison.cells)

    # the report: best learning rate by mean over seeds, mean and std of those seeds, costs
    with (root / "report.csv").open() as handle:
        rows = {row["strategy"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"full", "last_n:n=1"}
    by_rate = {}
    for cell in comparison.cells:
        if cell.label == "last_n:n=1":
            by_rate.setdefault(cell.learning_rate, []).append(RunSummary.load(comparison.run_dir(cell)).best_value)
    best = max(by_rate, key=lambda rate: statistics.fmean(by_rate[rate]))
    row = rows["last_n:n=1"]
    assert float(row["best_lr"]) == best
    assert float(row["metric_mean"]) == pytest.approx(statistics.fmean(by_rate[best]), abs=1e-4)
    assert float(row["metric_std"]) == pytest.approx(statistics.stdev(by_rate[best]), abs=1e-4)
    assert int(rows["full"]["trainable_parameters"]) > int(row["trainable_parameters"]) > 0
    assert float(row["peak_memory_mb"]) > 0 and float(row["checkpoint_mb"]) > 0 and float(row["samples_per_second"]) > 0
    report = json.loads((root / "report.json").read_text())
    assert report["cells_finished"] == report["cells_total"] == 6
    assert (root / "metric_vs_parameters.png").stat().st_size > 10_000 and (root / "learning_curves.png").is_file()
    assert "| last_n:n=1 |" in (root / "report.md").read_text()

    # the frozen-work cache: the four last_n cells share one cut, so the first builds and the others reuse
    hows = [RunSummary.load(comparison.run_dir(c)).frozen_cache.get("train", {}).get("how") for c in comparison.cells if c.label == "last_n:n=1"]
    assert sorted(hows) == ["built", "reused", "reused", "reused"]
    assert rows["full"]["frozen_cache"] == "off" and rows["last_n:n=1"]["frozen_cache"] in ("built/reused", "reused")
    assert float(row["uncached_train_seconds_estimate"]) >= float(row["train_seconds"])
    assert "2 stores built, 6 reused by other cells" in (root / "report.md").read_text()

    # resumable: finished cells are skipped, a missing one runs again
    victim = comparison.run_dir(comparison.cells[3])
    (victim / "summary.json").unlink()
    capsys.readouterr()
    assert main(["compare", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count("done, skipped") == 5 and out.count("training ...") + out.count("resuming ...") == 1
    assert (victim / "summary.json").is_file()


def test_compare_recipe_errors_are_one_line(tmp_path, tiny_checkpoint):
    recipe = tiny_recipe(tiny_checkpoint, tmp_path)
    recipe["compare"] = {"strategies": [{"name": "lora", "r": 0}]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(ConfigError, match="strategy.r: must be 1 or more"):
        load_comparison(path)
    recipe["compare"] = {"strategies": [{"name": "full"}], "seedz": [1]}
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(ConfigError, match="compare.seedz: unknown key"):
        load_comparison(path)
    for escaping in ("..", "../elsewhere", "/tmp/report"):
        recipe["compare"] = {"strategies": [{"name": "full"}], "name": escaping}
        path.write_text(yaml.safe_dump(recipe))
        with pytest.raises(ConfigError, match="compare.name=.*plain folder name inside output.dir"):
            load_comparison(path)
