"""``bert-tasks suite glue``: every task of a benchmark trained from its bundled recipe, one table, and
the leaderboard's submission files.

A suite recipe (bundled: ``suite/glue``) has a ``suite`` section and, beside it, any recipe sections
(``train``, ``model``, ``strategy``, ...) applied to every task's recipe; ``key=value`` overrides
work the same way (``train.epochs=1``, ``suite.max_train_samples=2000``, ``suite.tasks=[sst2,cola]``).

Each task is an ordinary run under ``OUTPUT/tasks/<task>/``, in its own process; a finished task is
skipped and an interrupted one resumes, so re-running the command continues a suite (as ``compare``).
Where a task's data comes from, first found: ``suite.data.<task>.<split>`` (a file or folder),
``suite.data_dir/<task>/<split>`` (a folder of parquet shards, the Hub's layout, or a
``.parquet/.jsonl/.csv/.tsv`` file), else the Hub split. A task whose data is neither local nor
reachable on the Hub is skipped with a one-line reason, as is a submission file without test data.
"""
from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from . import atomic_files
from .cell_backends import BackendOptions, CellJob, run_jobs
from .config import build_dataclass, check_run_name, config_from_dict, deep_copy_tree, load_recipe_tree, merge_trees, parse_overrides, resolve_recipe, set_dotted
from .errors import BertTasksError, ConfigError
from .glue import TASKS as GLUE_TASKS
from .glue import GlueTask, glue_table, table_markdown, task_score, write_submission_file, write_table_csv, zip_submission
from .rundir import SUMMARY_FILE
from .summary import RunSummary

LOCAL_FORMATS = (".parquet", ".jsonl", ".csv", ".tsv", ".json")
BENCHMARKS = {"glue": GLUE_TASKS}


@dataclass(frozen=True)
class SuiteConfig:
    benchmark: str = "glue"
    tasks: list[str] = field(default_factory=lambda: list(GLUE_TASKS))  # which tasks, in table order
    data_dir: Optional[str] = None  # <data_dir>/<task>/<split>: parquet folder or file; None: only suite.data and the Hub
    data: dict[str, Any] = field(default_factory=dict)  # {task: {split: path}}, e.g. {sst2: {train: train.tsv, validation: dev.tsv, test: test.tsv}}
    max_train_samples: Optional[int] = None  # cap every task's training rows (a quick pass); None: all
    max_eval_samples: Optional[int] = None  # cap every evaluation set; test sets are never capped (a submission has every row)
    name: Optional[str] = None  # folder under output.dir; None: the benchmark's name
    predict_test: bool = True  # write the submission files (needs test data)
    backend: Literal["local", "ray"] = "local"  # ray: every task a Ray task (cell_backends.py), as compare.backend
    address: Optional[str] = None
    cpus_per_cell: float = 1.0
    gpus_per_cell: float = 0.0
    max_retries: int = 0

    @property
    def backend_options(self) -> BackendOptions:
        return BackendOptions(self.backend, self.address, self.cpus_per_cell, self.gpus_per_cell, self.max_retries)

    def validate(self) -> None:
        self.backend_options.check("suite")
        if self.benchmark not in BENCHMARKS:
            raise ConfigError(f"suite.benchmark={self.benchmark!r}: known benchmarks are {', '.join(BENCHMARKS)}")
        known = BENCHMARKS[self.benchmark]
        for task in (*self.tasks, *self.data):
            if task not in known:
                raise ConfigError(f"suite.tasks / suite.data: {task!r} is not a {self.benchmark} task; the tasks are {', '.join(known)}")
        if not self.tasks:
            raise ConfigError("suite.tasks: name at least one task")
        for task, splits in self.data.items():
            if not isinstance(splits, dict) or not all(isinstance(v, str) for v in splits.values()):
                raise ConfigError(f"suite.data.{task}: expected a mapping of split names to files, got {splits!r}")
        for key in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"suite.{key}={value}: must be 1 or more")
        if self.name is not None:
            check_run_name(self.name, "suite.name")


@dataclass
class Suite:
    """A suite recipe, resolved: the sections shared by every task, the suite options, where it writes."""

    shared: dict[str, Any]  # recipe sections merged into every task's recipe
    config: SuiteConfig
    root: Path

    @property
    def tasks(self) -> list[GlueTask]:
        return [BENCHMARKS[self.config.benchmark][name] for name in self.config.tasks]

    def run_dir(self, task: GlueTask) -> Path:
        return self.root / "tasks" / task.name


def load_suite(recipe: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Suite:
    """A suite recipe ('glue' names the bundled suite/glue) with overrides; checked before anything runs."""
    path = _suite_path(recipe)
    tree, _ = load_recipe_tree(path)
    for key, value in parse_overrides(list(overrides)):
        set_dotted(tree, key, value)
    config = build_dataclass(SuiteConfig, tree.pop("suite", None) or {}, "suite")
    output = config_from_dict({**deep_copy_tree(tree)}, recipe="suite").output  # the shared sections must form a valid recipe
    suite = Suite(tree, config, Path(output.dir) / (config.name or config.benchmark))
    for task in suite.tasks:  # every task's recipe builds, so a bad override fails now, not after hours
        config_from_dict(task_tree(suite, task, {}), recipe=task.name)
    return suite


def _suite_path(recipe: str | Path) -> Path:
    try:
        return resolve_recipe(f"suite/{recipe}")
    except ConfigError:
        return resolve_recipe(recipe)


def local_source(suite: Suite, task: GlueTask, split: str, config: Optional[str] = None) -> Optional[str]:
    """Where ``split`` of ``task`` (or of glue config ``config``) is on disk, or None."""
    name = config or task.name
    given = (suite.config.data.get(name) or {}).get(split)
    if given is not None:
        return given
    if suite.config.data_dir is None:
        return None
    base = Path(suite.config.data_dir) / name / split
    if base.is_dir() and any(base.glob("*.parquet")):
        return str(base)
    return next((str(base.with_suffix(s)) for s in LOCAL_FORMATS if base.with_suffix(s).is_file()), None)


def task_tree(suite: Suite, task: GlueTask, sources: dict[str, str]) -> dict[str, Any]:
    """The full training recipe of one task: its bundled recipe, the suite's shared sections, its data and caps."""
    base, _ = load_recipe_tree(f"glue/{task.name}")
    tree = merge_trees(base, suite.shared)
    data = tree.setdefault("data", {})
    data["train"] = sources.get("train", "train")
    if len(task.validation) == 1:
        data["validation"] = sources.get(task.validation[0][1], task.validation[0][1])
    else:
        data["validation"] = {name: sources.get(split, split) for name, split in task.validation}
    data["test"] = None  # the suite predicts the test sets itself
    if any(Path(v).suffix.lower() == ".tsv" for v in sources.values()):
        data["tsv_quoting"] = False  # GLUE TSVs hold bare quotes
    train = tree.setdefault("train", {})
    if suite.config.max_train_samples is not None:
        train["max_train_samples"] = suite.config.max_train_samples
    if suite.config.max_eval_samples is not None:
        train["max_eval_samples"] = suite.config.max_eval_samples
    run_dir = suite.run_dir(task)
    tree["output"] = {**tree.get("output", {}), "dir": str(run_dir.parent), "name": run_dir.name}
    tree["recipe"] = task.name
    return tree


def hub_unreachable() -> Optional[str]:
    """Why Hub data cannot be had now (offline settings, or no connection to huggingface.co), or None."""
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(variable, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{variable} is set"
    try:
        socket.create_connection(("huggingface.co", 443), timeout=5).close()
    except OSError as error:
        return f"huggingface.co is unreachable ({error.strerror or type(error).__name__})"
    return None


@dataclass
class TaskOutcome:
    task: GlueTask
    status: str  # 'done', 'skipped' or 'failed'
    reason: str = ""
    summary: Optional[RunSummary] = None


def run_suite(suite: Suite, echo: bool = True) -> list[TaskOutcome]:
    """Train every unfinished task (each in its own process, on the configured backend), then write the
    table and submission."""
    suite.root.mkdir(parents=True, exist_ok=True)
    (suite.root / "recipes").mkdir(exist_ok=True)
    offline: Optional[str] = None
    checked_hub = False
    outcomes: dict[str, TaskOutcome] = {}
    jobs: list[tuple[GlueTask, CellJob]] = []
    for number, task in enumerate(suite.tasks, start=1):
        where = f"[{number}/{len(suite.tasks)}] {task.name}"
        run_dir = suite.run_dir(task)
        if (run_dir / SUMMARY_FILE).is_file():
            if echo:
                print(f"{where}: done, skipped", flush=True)
            outcomes[task.name] = TaskOutcome(task, "done", summary=RunSummary.load(run_dir))
            continue
        splits = ["train", *(split for _, split in task.validation)]
        sources = {split: source for split in splits if (source := local_source(suite, task, split)) is not None}
        missing = [split for split in splits if split not in sources]
        if missing:
            if not checked_hub:
                offline, checked_hub = hub_unreachable(), True
            if offline:
                reason = f"no local {', '.join(missing)} data (suite.data.{task.name}, suite.data_dir) and no Hub: {offline}"
                outcomes[task.name] = TaskOutcome(task, "skipped", reason)
                if echo:
                    print(f"{where}: skipped: {reason}", flush=True)
                continue
        jobs.append((task, CellJob(task_tree(suite, task, sources), run_dir, suite.root / "recipes" / f"{task.name}.yaml", where)))
    for (task, _), result in zip(jobs, run_jobs([job for _, job in jobs], suite.config.backend_options, "suite", echo)):
        if result.ok:
            outcomes[task.name] = TaskOutcome(task, "done", summary=RunSummary.load(suite.run_dir(task)))
            continue
        status = "skipped" if "cannot load hub" in result.error else "failed"
        print(f"{result.job.where}: {status.upper()} ({result.error[:200]}; log: {result.log})", file=sys.stderr, flush=True)
        outcomes[task.name] = TaskOutcome(task, status, result.error[:300])
    ordered = [outcomes[task.name] for task in suite.tasks]
    write_results(suite, ordered, echo)
    return ordered


def write_results(suite: Suite, outcomes: list[TaskOutcome], echo: bool = True) -> dict[str, Any]:
    """The GLUE table (md/csv/json) of the finished tasks and, when asked, the submission files and zip."""
    scores = {}
    for outcome in outcomes:
        if outcome.summary is not None:
            score = task_score(outcome.task, outcome.summary.eval)
            if score is None:
                outcome.status, outcome.reason = "failed", f"the run reports {', '.join(sorted(outcome.summary.eval))}, not {[m for _, m in outcome.task.metrics]}"
            else:
                scores[outcome.task.name] = score
    table = glue_table(scores)
    submitted, not_submitted = (write_submission(suite, outcomes) if suite.config.predict_test else ([], {}))
    table["runs"] = {o.task.name: {"status": o.status, "reason": o.reason, "run_dir": str(suite.run_dir(o.task))} for o in outcomes}
    table["submission"] = {"files": submitted, "missing": not_submitted}
    atomic_files.write_json(suite.root / "glue_table.json", table)
    write_table_csv(table, suite.root / "glue_table.csv")
    markdown = table_markdown(table, [t.name for t in suite.tasks])
    notes = [f"- {o.task.title}: {o.status}{': ' + o.reason if o.reason else ''}" for o in outcomes if o.status != "done"]
    notes += [f"- {name}: not in the submission: {why}" for name, why in not_submitted.items()]
    text = "\n".join([f"# {suite.config.benchmark.upper()} results: {suite.root.name}", "",
                      "Scores in percent on each task's validation set(s), best checkpoint of each run; the average is over the tasks shown.", "",
                      markdown, "", *(["## Not included", "", *notes, ""] if notes else []),
                      *([f"Submission: `submission.zip` ({', '.join(submitted)})", ""] if submitted else [])])
    atomic_files.write_text(suite.root / "glue_table.md", text)
    if echo:
        print(markdown)
        for line in notes:
            print(line)
        print(f"table: {suite.root / 'glue_table.md'}")
    return table


def write_submission(suite: Suite, outcomes: list[TaskOutcome]) -> tuple[list[str], dict[str, str]]:
    """Test-set predictions of every finished task in the leaderboard's format; returns (files written, file -> why not)."""
    from .assembly import read_eval_set
    from .eval_sets import EvalSet
    from .predictor import load

    folder = suite.root / "submission"
    folder.mkdir(exist_ok=True)
    written, missing = [], {}
    offline: Optional[str] = None
    for outcome in outcomes:
        for test in outcome.task.tests:
            target = folder / test.file
            if outcome.summary is None:
                missing[test.file] = f"{outcome.task.name} was not trained ({outcome.status})"
                continue
            if target.is_file() and target.stat().st_mtime >= (suite.run_dir(outcome.task) / SUMMARY_FILE).stat().st_mtime:
                written.append(test.file)  # predicted earlier from this same run
                continue
            source = local_source(suite, outcome.task, test.split, test.config)
            if source is None:
                offline = offline or hub_unreachable() or ""
                if offline:
                    missing[test.file] = f"no local {test.config or outcome.task.name} {test.split} data and no Hub: {offline}"
                    continue
            predictor = load(suite.run_dir(outcome.task), device="auto", precision="auto")
            data = predictor.config.data
            read = {"dataset": None if source else "glue", "dataset_config": test.config or outcome.task.name,
                    "tsv_quoting": False if source and source.endswith(".tsv") else data.tsv_quoting, "conll_columns": None}
            eval_set = EvalSet("test", None, source or test.split, read)
            try:
                split = read_eval_set(eval_set)
                predictions = predictor.predict_split(predictor.task.prepare_input(split), batch_size=predictor.config.train.eval_batch_size)
                indices = row_indices(split)
                write_submission_file(outcome.task, indices, predictions, target)
            except (BertTasksError, ValueError) as error:
                missing[test.file] = str(error).splitlines()[0][:300]
                continue
            written.append(test.file)
    if written:
        zip_submission(folder, suite.root / "submission.zip")
    return sorted(written), missing


def row_indices(split: Any) -> list[int]:
    """A test set's example indices: its 'idx' (Hub) or 'index' (GLUE TSVs) column, else the row numbers."""
    for column in ("idx", "index"):
        if column in split.dataset.column_names:
            return [int(value) for value in split.dataset[column]]
    return list(range(len(split.dataset)))


def run(recipe: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Path:
    """Run (or continue) a suite and write its results; returns the suite folder. Fails (after writing
    what finished) when a task failed; skipped tasks are reported, not failures."""
    suite = load_suite(recipe, overrides)
    outcomes = run_suite(suite)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise BertTasksError(f"{len(failed)} of {len(outcomes)} tasks failed ({', '.join(o.task.name for o in failed)}; see their .log files); the table covers the rest")
    print(json.dumps({o.task.name: o.status for o in outcomes}))
    return suite.root
