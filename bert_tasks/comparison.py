"""``bert-tasks compare RECIPE``: strategies side by side, each over its own learning-rate grid and seeds.

A comparison recipe is a training recipe (or ``base: <recipe>`` plus changes to it) with a
``compare`` section::

    base: glue/sst2
    compare:
      seeds: [1, 2]
      strategies:
        - {name: full, learning_rates: [2e-5, 5e-5]}
        - {name: last_n, n: 2, learning_rates: [1e-4, 3e-4]}
        - {name: bottleneck, reduction_factor: 16}        # no grid: the strategy's default_learning_rates

Every (strategy, learning rate, seed) cell is an ordinary run in its own process (so peak
memory is the cell's own) under ``OUTPUT/cells/``. Finished cells are skipped and
interrupted ones resume from their last checkpoint, so re-running the command continues a
comparison. A cell never outlives the comparison: stopping ``compare`` (Ctrl-C, SIGTERM, or on
Linux even SIGKILL) stops the cell it is running. The report (``comparison_report``) picks
each strategy's best learning rate by its mean over seeds.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Optional

import yaml

from . import atomic_files
from .config import build_dataclass, check_run_name, config_from_dict, deep_copy_tree, load_recipe_tree, merge_trees, parse_overrides, set_dotted
from .cell_asha import check_asha, run_with_asha, stopped
from .cell_backends import BackendOptions, CellJob, CellResult, run_jobs
from .errors import BertTasksError, ConfigError
from .registry import STRATEGIES
from .rundir import CHECKPOINTS_DIR, SUMMARY_FILE


@dataclass(frozen=True)
class CompareConfig:
    strategies: list[dict[str, Any]] = field(default_factory=list)  # strategy sections, each may add learning_rates
    seeds: list[int] = field(default_factory=lambda: [1, 2])
    name: Optional[str] = None  # folder under output.dir; None: '<recipe name>'
    metric: Optional[str] = None  # None: the task's main metric (train.best_metric if set)
    backend: Literal["local", "ray"] = "local"  # ray: every cell a Ray task (cell_backends.py); needs bert_tasks[ray]
    address: Optional[str] = None  # ray: None starts a local instance; 'auto' joins the cluster `ray start` made
    cpus_per_cell: float = 1.0  # ray: CPUs each cell declares (and its torch threads)
    gpus_per_cell: float = 0.0  # ray: GPUs each cell declares
    max_retries: int = 0  # a failed cell is tried again (resuming) this many times, then reported
    # asha: Ray Tune's asynchronous successive halving stops cells that trail the other cells of their strategy
    # (cell_asha.py; needs backend=ray): after asha_grace evaluations, then asha_reduction times as many, ...
    early_stop: Optional[Literal["asha"]] = None
    asha_grace: int = 1
    asha_reduction: float = 3.0

    @property
    def backend_options(self) -> BackendOptions:
        return BackendOptions(self.backend, self.address, self.cpus_per_cell, self.gpus_per_cell, self.max_retries)

    def validate(self) -> None:
        self.backend_options.check("compare")
        check_asha(self.early_stop, self.backend, self.asha_grace, self.asha_reduction)
        if not self.strategies:
            raise ConfigError("compare.strategies: list at least one strategy, e.g. [{name: full}, {name: lora}]")
        if not self.seeds:
            raise ConfigError("compare.seeds: give at least one seed")
        if self.name is not None:
            check_run_name(self.name, "compare.name")  # the report folder stays inside output.dir


@dataclass(frozen=True)
class Cell:
    """One run of a comparison: a strategy at one learning rate and seed."""

    label: str  # the strategy as tables show it, e.g. 'last_n:n=2'
    family: str  # the strategy's registered name
    strategy: dict[str, Any]
    learning_rate: float
    seed: int

    @property
    def folder(self) -> str:
        return f"{_slug(self.label)}/lr{self.learning_rate:g}-seed{self.seed}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text.replace(":", "-").replace(",", "_"))


@dataclass
class Comparison:
    """A comparison recipe, resolved: the shared run tree, its cells and where they go."""

    tree: dict[str, Any]  # the training recipe every cell starts from (without 'compare')
    config: CompareConfig
    cells: list[Cell]
    root: Path

    def run_dir(self, cell: Cell) -> Path:
        return self.root / "cells" / cell.folder


def load_comparison(recipe: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Comparison:
    """Read a comparison recipe; every cell's run config is built (and so checked) before anything runs."""
    tree, name = load_recipe_tree(recipe)
    base = tree.pop("base", None)
    if base is not None:
        base_tree, _ = load_recipe_tree(str(base))
        tree = merge_trees(base_tree, tree)
    for key, value in parse_overrides(list(overrides)):  # after the merge, so they win over base and recipe
        set_dotted(tree, key, value)
    compare = build_dataclass(CompareConfig, tree.pop("compare", None) or {}, "compare")
    tree.pop("strategy", None)  # each cell names its own
    cells = []
    for number, section in enumerate(compare.strategies, start=1):
        if not isinstance(section, dict) or "name" not in section:
            raise ConfigError(f"compare.strategies[{number}]: expected a mapping with a strategy name, got {section!r}")
        section = dict(section)
        rates = section.pop("learning_rates", None)
        strategy = STRATEGIES.build(config_from_dict({**deep_copy_tree(tree), "strategy": section}, recipe=name).strategy)
        rates = rates or strategy.default_learning_rates
        if not rates:
            raise ConfigError(f"compare.strategies[{number}]: give learning_rates for strategy {section['name']!r} (it has no default grid)")
        for rate in rates:
            for seed in compare.seeds:
                cells.append(Cell(strategy.describe(), str(section["name"]), section, float(rate), int(seed)))
    labels = [c.label for c in cells]
    if len({(c.label, c.learning_rate, c.seed) for c in cells}) != len(cells):
        raise ConfigError(f"compare.strategies: two entries describe the same strategy ({', '.join(sorted(set(labels)))})")
    output = config_from_dict({**deep_copy_tree(tree), "strategy": cells[0].strategy}, recipe=name).output
    root = Path(output.dir) / (compare.name or name)
    return Comparison(tree, compare, cells, root)


def cell_tree(comparison: Comparison, cell: Cell) -> dict[str, Any]:
    """The full training recipe of one cell."""
    tree = deep_copy_tree(comparison.tree)
    tree["strategy"] = deep_copy_tree(cell.strategy)
    tree.setdefault("train", {}).update({"learning_rate": cell.learning_rate, "seed": cell.seed})
    run_dir = comparison.run_dir(cell)
    tree.setdefault("output", {}).update({"dir": str(run_dir.parent), "name": run_dir.name})
    return tree


def run_comparison(comparison: Comparison, echo: bool = True) -> list[CellResult]:
    """Run every unfinished cell, each in its own process, on the configured backend; returns the failures."""
    comparison.root.mkdir(parents=True, exist_ok=True)
    (comparison.root / "recipes").mkdir(exist_ok=True)
    jobs = []
    for number, cell in enumerate(comparison.cells, start=1):
        run_dir = comparison.run_dir(cell)
        where = f"[{number}/{len(comparison.cells)}] {cell.label} lr={cell.learning_rate:g} seed={cell.seed}"
        if (run_dir / SUMMARY_FILE).is_file() or stopped(run_dir):
            if echo:
                print(f"{where}: {'done' if (run_dir / SUMMARY_FILE).is_file() else 'stopped early'}, skipped", flush=True)
            continue
        recipe = comparison.root / "recipes" / f"{cell.folder.replace('/', '__')}.yaml"
        jobs.append((cell, CellJob(cell_tree(comparison, cell), run_dir, recipe, where)))
    config = comparison.config
    if config.early_stop == "asha" and jobs:
        results = run_with_asha([job for _, job in jobs], [cell.label for cell, _ in jobs], config.backend_options, config.metric,
                                config.asha_grace, config.asha_reduction, echo)
    else:
        results = run_jobs([job for _, job in jobs], config.backend_options, "compare", echo)
    failed = [result for result in results if not result.ok]
    for result in failed:
        print(f"{result.job.where}: FAILED ({result.error[:200]}; log: {result.log})", file=sys.stderr, flush=True)
    return failed


def train_in_own_process(tree: dict[str, Any], run_dir: Path, recipe: Path, where: str, echo: bool = True) -> tuple[int, str, Path]:
    """Train the full recipe ``tree`` (its output is ``run_dir``) in a process of its own, resuming the run
    if a checkpoint of it is there; the recipe is written to ``recipe`` and the output to RUN_DIR.log.
    Returns (exit status, the log's last line, the log)."""
    resume = (run_dir / CHECKPOINTS_DIR).is_dir()
    tree["train"]["resume"] = resume
    tree["output"]["overwrite"] = not resume
    atomic_files.write_text(recipe, yaml.safe_dump(tree, sort_keys=False))
    if echo:
        print(f"{where}: {'resuming' if resume else 'training'} ...", flush=True)
    log = run_dir.parent / f"{run_dir.name}.log"
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle:
        returncode = run_cell_process([sys.executable, "-m", "bert_tasks", "train", str(recipe)], handle)
    last = next((line for line in reversed(log.read_text().splitlines()) if line.strip()), "") if returncode else ""
    return returncode, last, log


PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h): a signal the kernel sends a process when its parent dies


def _die_with_parent(parent: int) -> Optional[Callable[[], None]]:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when this process dies, however it dies
    (SIGKILL included, which no handler sees); None where prctl does not exist."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def arrange() -> None:  # runs in the child between fork and exec
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return arrange


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM ends this process through ``SystemExit`` (so ``finally`` blocks run and stop the
    cell) instead of ending it on the spot."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def leave(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, leave)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_cell_process(command: list[str], log: Any, grace_seconds: float = 30.0) -> int:
    """Run one cell's command with its output in ``log``; returns its exit status. If this process
    is stopped meanwhile (Ctrl-C, SIGTERM, an error), the cell is stopped too: SIGTERM, then
    SIGKILL after ``grace_seconds``. On Linux the kernel also stops it if this process is killed."""
    with _sigterm_as_exit():
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(), preexec_fn=_die_with_parent(os.getpid()))
        try:
            return process.wait()
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=grace_seconds)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def compare(recipe: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Path:
    """Run (or continue) a comparison and write its report; returns the report folder."""
    from .comparison_report import write_report

    comparison = load_comparison(recipe, overrides)
    failed = run_comparison(comparison)
    table = write_report(comparison, {str(result.job.run_dir): result.error for result in failed})
    if table:
        print(table)
        print(f"report: {comparison.root / 'report.md'}")
    if failed:
        raise BertTasksError(f"{len(failed)} of {len(comparison.cells)} cells failed (see their .log files); the report covers the rest")
    return comparison.root
