"""`bert-tasks suite glue` on the shared SST-2, CoLA and STS-B data with tiny caps: the table equals each
run's summary, the submission files are what the leaderboard reads, a second call resumes, and tasks
without data are skipped with a reason. Skips when ../shared/data is absent."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import SHARED_DATA

from bert_tasks.errors import ConfigError
from bert_tasks.glue import TASKS, spell
from bert_tasks.suite import load_suite, run_suite
from bert_tasks.summary import RunSummary

GLUE = SHARED_DATA / "glue"
SST2 = SHARED_DATA / "sst2_tsv"
needs_data = pytest.mark.skipif(not (GLUE / "cola" / "train").is_dir() or not (SST2 / "test.tsv").is_file(), reason="needs ../shared/data")


def _overrides(checkpoint: Path, out: Path) -> list[str]:
    # the shared files have no CoLA / STS-B test sets: their dev sets stand in, so every file can be checked
    data = (f"suite.data={{sst2: {{train: '{SST2 / 'train.tsv'}', test: '{SST2 / 'test.tsv'}'}}, "
            f"cola: {{test: '{GLUE / 'cola' / 'validation'}'}}, stsb: {{test: '{GLUE / 'stsb' / 'validation'}'}}}}")
    return ["suite.tasks=[cola,sst2,stsb,rte]", f"suite.data_dir={GLUE}", data, "suite.max_train_samples=48", "suite.max_eval_samples=40",
            f"model.checkpoint={checkpoint}", "train.epochs=1", "train.batch_size=16", "train.mixed_precision=no", f"output.dir={out}"]


@needs_data
def test_glue_suite_table_submission_and_resume(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # RTE has no local data: skipped, with the reason
    suite = load_suite("glue", _overrides(tiny_checkpoint, tmp_path))
    outcomes = {o.task.name: o for o in run_suite(suite)}
    assert {name: o.status for name, o in outcomes.items()} == {"cola": "done", "sst2": "done", "stsb": "done", "rte": "skipped"}
    assert "HF_HUB_OFFLINE is set" in outcomes["rte"].reason and "\n" not in outcomes["rte"].reason

    table = json.loads((suite.root / "glue_table.json").read_text())
    summaries = {name: RunSummary.load(suite.run_dir(TASKS[name])) for name in ("cola", "sst2", "stsb")}
    rows = {row["task"]: row for row in table["tasks"]}
    assert rows["CoLA"]["MCC"] == pytest.approx(100 * summaries["cola"].eval["matthews"])
    assert rows["SST-2"]["Acc"] == pytest.approx(100 * summaries["sst2"].eval["accuracy"])
    assert rows["STS-B"]["Pearson"] == pytest.approx(100 * summaries["stsb"].eval["pearson"])
    assert rows["STS-B"]["Spearman"] == pytest.approx(100 * summaries["stsb"].eval["spearman"])
    assert rows["STS-B"]["score"] == pytest.approx((rows["STS-B"]["Pearson"] + rows["STS-B"]["Spearman"]) / 2)
    assert table["average"] == pytest.approx(sum(r["score"] for r in rows.values()) / 3) and table["tasks_in_average"] == 3
    assert all(s.steps == 3 for s in summaries.values())  # 48 rows / batch 16: the caps reached every task
    markdown = (suite.root / "glue_table.md").read_text()
    assert "| CoLA (MCC) | SST-2 (Acc) | STS-B (Pearson/Spearman) | RTE (Acc) | Average (3 of 9 tasks) |" in markdown
    assert f"{rows['STS-B']['Pearson']:.1f}/{rows['STS-B']['Spearman']:.1f}" in markdown and "RTE: skipped" in markdown
    with open(suite.root / "glue_table.csv") as handle:
        long = list(csv.DictReader(handle))
    assert {(r["task"], r["metric"]) for r in long} >= {("CoLA", "MCC"), ("STS-B", "Spearman"), ("average", "score")}

    expected_rows = {"SST-2.tsv": 1821, "CoLA.tsv": 1043, "STS-B.tsv": 1500}  # one per test example, none capped
    with zipfile.ZipFile(suite.root / "submission.zip") as archive:
        assert sorted(archive.namelist()) == sorted(expected_rows)
        for name, count in expected_rows.items():
            lines = archive.read(name).decode().splitlines()
            assert lines[0] == "index\tprediction" and len(lines) == count + 1
            parsed = list(csv.reader(lines[1:], delimiter="\t"))
            assert [int(index) for index, _ in parsed] == list(range(count))
            values = {value for _, value in parsed}
            if name == "STS-B.tsv":
                assert all(0.0 <= float(v) <= 5.0 and len(v.split(".")[1]) == 3 for v in values)
            else:
                assert values <= {"0", "1"}

    # a second call: every finished task is skipped, nothing retrained, the same table
    capsys.readouterr()
    again = run_suite(load_suite("glue", _overrides(tiny_checkpoint, tmp_path)))
    assert [o.status for o in again] == ["done", "done", "done", "skipped"]
    assert capsys.readouterr().out.count("done, skipped") == 3
    assert json.loads((suite.root / "glue_table.json").read_text())["tasks"] == table["tasks"]


def test_submission_spellings():
    assert spell(TASKS["mnli"], {"label": "neutral"}) == "neutral"
    assert spell(TASKS["mnli"], {"label": "2"}) == "contradiction"  # a run that learnt the Hub's indices
    assert spell(TASKS["qnli"], {"label": "not_entailment"}) == "not_entailment"
    assert spell(TASKS["cola"], {"label": "acceptable"}) == "1" and spell(TASKS["sst2"], {"label": "0"}) == "0"
    assert spell(TASKS["stsb"], {"score": 5.7}) == "5.000" and spell(TASKS["stsb"], {"score": -0.2}) == "0.000"
    with pytest.raises(ValueError, match="not one of the RTE labels"):
        spell(TASKS["rte"], {"label": "maybe"})


@pytest.mark.parametrize("override, expected", [
    ("suite.tasks=[sst2,nope]", "suite.tasks / suite.data: 'nope' is not a glue task"),
    ("suite.max_train_samples=0", "suite.max_train_samples=0: must be 1 or more"),
    ("train.epochs=-1", "train.epochs"),
])
def test_bad_suite_options_fail_before_anything_runs(tmp_path, override, expected):
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("(", r"\(")):
        load_suite("glue", [override, f"output.dir={tmp_path}"])
    done = subprocess.run([sys.executable, "-m", "bert_tasks", "suite", "glue", override, f"output.dir={tmp_path}"], capture_output=True, text=True)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and not any(tmp_path.iterdir())
