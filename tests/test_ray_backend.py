"""compare.backend=ray on a local Ray instance (2 CPUs, tiny model, a 2x2 grid): the same report cells and
metrics as the local backend, an interrupted cell resumed, a failing cell reported while the others finish."""
from __future__ import annotations

import csv
import json

import pytest
import yaml
from conftest import tiny_recipe

from bert_tasks.comparison import compare, load_comparison
from bert_tasks.errors import BertTasksError, ConfigError
from bert_tasks.rundir import CHECKPOINTS_DIR, SUMMARY_FILE

ray = pytest.importorskip("ray")


def _grid(checkpoint, tmp_path, name, **compare_options):
    recipe = tiny_recipe(checkpoint, tmp_path / "runs", train={"epochs": 1, "max_train_samples": 64, "max_eval_samples": 32, "save_every": 2})
    recipe["compare"] = {"seeds": [1, 2], "name": name, "strategies": [{"name": "full", "learning_rates": [1e-3]}, {"name": "last_n", "n": 1, "learning_rates": [3e-3]}],
                         **compare_options}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _report(root):
    with (root / "report.csv").open() as handle:
        return {row["strategy"]: row for row in csv.DictReader(handle)}


@pytest.mark.slow
def test_ray_cells_match_local_cells_resume_and_report_failures(tmp_path, tiny_checkpoint_no_dropout, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    local = compare(_grid(tiny_checkpoint_no_dropout, tmp_path, "local"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # the "local Ray instance" the cells are spread over
    try:
        on_ray = compare(_grid(tiny_checkpoint_no_dropout, tmp_path, "ray", backend="ray", cpus_per_cell=1))
        ours, theirs = _report(local), _report(on_ray)
        assert set(ours) == set(theirs) == {"full", "last_n:n=1"}
        for strategy in ours:
            for column in ("metric_mean", "metric_std", "seeds", "trainable_parameters", "best_lr"):
                assert theirs[strategy][column] == ours[strategy][column], (strategy, column)

        # an interrupted cell (its checkpoints kept, no summary) resumes on Ray; finished cells are skipped
        comparison = load_comparison(_grid(tiny_checkpoint_no_dropout, tmp_path, "ray", backend="ray"))
        cell_dir = comparison.run_dir(comparison.cells[1])
        summary = json.loads((cell_dir / SUMMARY_FILE).read_text())
        (cell_dir / SUMMARY_FILE).unlink()
        assert (cell_dir / CHECKPOINTS_DIR).is_dir()
        compare(_grid(tiny_checkpoint_no_dropout, tmp_path, "ray", backend="ray"))
        written = yaml.safe_load((comparison.root / "recipes" / f"{comparison.cells[1].folder.replace('/', '__')}.yaml").read_text())
        assert written["train"]["resume"] is True  # continued from its checkpoint, not trained again
        assert json.loads((cell_dir / SUMMARY_FILE).read_text())["best_value"] == summary["best_value"]

        # a cell that fails (LoRA on modules the model does not have) is retried, then reported; the others finish
        failing = _grid(tiny_checkpoint_no_dropout, tmp_path, "failing", backend="ray", max_retries=1)
        tree = yaml.safe_load(failing.read_text())
        tree["compare"]["strategies"].append({"name": "lora", "target_modules": ["no_such_module"], "learning_rates": [1e-3]})
        failing.write_text(yaml.safe_dump(tree))
        with pytest.raises(BertTasksError, match="2 of 6 cells failed"):
            compare(failing)
        root = tmp_path / "runs" / "failing"
        report = json.loads((root / "report.json").read_text())
        assert {s["strategy"] for s in report["strategies"]} == {"full", "last_n:n=1"}
        assert len(report["failed_cells"]) == 2 and all("no_such_module" in c["error"] for c in report["failed_cells"])
        assert "## Failed cells" in (root / "report.md").read_text()
    finally:
        ray.shutdown()


def test_backend_options_are_checked(tmp_path, tiny_checkpoint):
    with pytest.raises(ConfigError, match="compare.address: only used with compare.backend=ray"):
        load_comparison(_grid(tiny_checkpoint, tmp_path, "x", address="auto"))
    with pytest.raises(ConfigError, match="compare.max_retries=-1"):
        load_comparison(_grid(tiny_checkpoint, tmp_path, "y", backend="ray", max_retries=-1))


@pytest.mark.slow
def test_asha_stops_the_cell_that_trails_its_strategy(tmp_path, tiny_checkpoint_no_dropout, monkeypatch, capsys):
    """Cells one at a time (2 CPUs each on a 2-CPU instance): the good rate runs to the end; the absurd one
    (its loss explodes) is below the rung's cutoff at its first evaluation and is stopped there. Enough steps
    (80 evaluations) that the stop reaches the cell while it is still training."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    recipe = tiny_recipe(tiny_checkpoint_no_dropout, tmp_path / "runs", train={"epochs": 20, "max_train_samples": 256, "max_eval_samples": 32, "eval_every": 4})
    recipe["compare"] = {"seeds": [1], "name": "asha", "backend": "ray", "cpus_per_cell": 2, "early_stop": "asha", "asha_grace": 1, "asha_reduction": 2,
                         "metric": "loss", "strategies": [{"name": "full", "learning_rates": [1e-3, 30.0]}]}
    path = tmp_path / "asha.yaml"
    path.write_text(yaml.safe_dump(recipe))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        root = compare(path)
        comparison = load_comparison(path)
        good, bad = (comparison.run_dir(cell) for cell in comparison.cells)
        assert (good / SUMMARY_FILE).is_file() and not (good / "stopped_early.json").exists()
        assert not (bad / SUMMARY_FILE).exists() and (bad / CHECKPOINTS_DIR).is_dir()
        info = json.loads((bad / "stopped_early.json").read_text())
        assert info["metric"] == "loss" and 1 <= len(info["evaluations"]) < 40
        report = json.loads((root / "report.json").read_text())
        assert [c["learning_rate"] for c in report["stopped_cells"]] == [30.0] and report["strategies"][0]["best_lr"] == 1e-3
        assert "## Stopped early (ASHA)" in (root / "report.md").read_text()
        capsys.readouterr()
        compare(path)  # again: the finished cell and the stopped one are both skipped
        assert "stopped early, skipped" in capsys.readouterr().out
    finally:
        ray.shutdown()


def test_asha_needs_the_ray_backend(tmp_path, tiny_checkpoint):
    path = _grid(tiny_checkpoint, tmp_path, "asha-local", early_stop="asha")
    with pytest.raises(ConfigError) as error:
        load_comparison(path)
    assert "compare.early_stop=asha runs the cells as Ray Tune trials: set compare.backend=ray" in str(error.value)


def test_a_nan_or_infinite_metric_is_the_worst_score_asha_sees():
    """A cell whose loss became NaN must fall below any cutoff (NaN compares false with everything)."""
    from bert_tasks.cell_asha import WORST_SCORE, tune_score

    assert tune_score(float("nan")) == tune_score(float("-inf")) == tune_score(float("inf")) == WORST_SCORE
    assert tune_score(-0.69) == -0.69 and WORST_SCORE < -1e29
