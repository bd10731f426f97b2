"""``compare.early_stop: asha``: Ray Tune's asynchronous successive halving stops hopeless cells early.

Every cell is a Tune trial on Ray (the ``ray`` backend's resources per cell). A trial trains its cell in
a process of its own, exactly as ``cell_backends`` does, and reports the comparison's metric to Tune
after each of the cell's evaluations (read from its metrics.jsonl). ASHA compares cells of the same
strategy only (one Tune run per strategy, so a slow-learning strategy is not stopped for being behind a
fast one): at each rung (``asha_grace`` evaluations, then ``asha_reduction`` times as many, ...) a cell
below the best 1/``asha_reduction`` of the cells that reached the rung is stopped. A stopped cell keeps
its folder and checkpoints and gets ``stopped_early.json`` (its evaluations so far, why); the report
lists it apart, and re-running the comparison skips it (delete the file to train it to the end).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

from . import atomic_files
from .cell_backends import BackendOptions, CellJob, CellResult, _ray_module, train_with_retries
from .errors import ConfigError
from .metrics import greater_is_better
from .rundir import SUMMARY_FILE

STOPPED_FILE = "stopped_early.json"
POLL_SECONDS = 0.25
WORST_SCORE = -1e30  # finite: ASHA interpolates percentiles of the scores at a rung, and -inf would make them NaN


def eval_scores(run_dir: Path, metric: Optional[str]) -> tuple[Optional[str], list[float]]:
    """(the metric, its value at each evaluation so far) from a cell's metrics.jsonl; ``metric`` None: the
    run's own best metric (its start record says which)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return metric, []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            break
    for record in records:
        if record.get("event") == "start" and metric is None:
            metric = record.get("best_metric")
    if metric is None:
        return None, []
    return metric, [float(r[metric]) for r in records if r.get("event") == "eval" and isinstance(r.get(metric), (int, float))]


def tune_score(score: float) -> float:
    """What ASHA compares (greater is better): a NaN or infinite metric (a loss that exploded) is the
    worst score, so the cell is stopped instead of never comparing below the cutoff (NaN compares false)."""
    return score if math.isfinite(score) else WORST_SCORE


def _trial(config: dict[str, Any], jobs: list[CellJob], metric: Optional[str], max_retries: int, threads: int) -> None:
    """One Tune trial: train the cell in its own process, report each new evaluation's score."""
    from ray import tune

    os.environ["OMP_NUM_THREADS"] = str(threads)
    job = jobs[config["cell"]]
    outcome: dict[str, CellResult] = {}
    worker = threading.Thread(target=lambda: outcome.update(result=train_with_retries(job, max_retries, echo=False)), daemon=True)
    worker.start()
    reported = 0
    while True:
        alive = worker.is_alive()
        name, scores = eval_scores(job.run_dir, metric)
        for index in range(reported, len(scores)):
            sign = 1.0 if greater_is_better(name or "") else -1.0
            tune.report({"score": tune_score(sign * scores[index]), "evaluations": index + 1})
        reported = len(scores)
        if not alive:
            break
        time.sleep(POLL_SECONDS)
    result = outcome.get("result")
    if result is None or not result.ok:
        raise RuntimeError(result.error if result else "the cell's process ended without a result")


def run_with_asha(jobs: list[CellJob], groups: list[str], options: BackendOptions, metric: Optional[str], grace: int, reduction: float,
                  echo: bool = True) -> list[CellResult]:
    """Train every job as a Tune trial under ASHA, one Tune run per group (strategy); returns one result per
    job, in job order (a stopped cell counts as done: its folder says it was stopped)."""
    ray = _ray_module("compare")
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=options.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    results: dict[int, CellResult] = {}
    threads = max(1, math.floor(options.cpus_per_cell))
    try:
        for group in dict.fromkeys(groups):
            members = [i for i, g in enumerate(groups) if g == group]
            trainable = tune.with_resources(tune.with_parameters(_trial, jobs=jobs, metric=metric, max_retries=options.max_retries, threads=threads),
                                            {"cpu": options.cpus_per_cell, "gpu": options.gpus_per_cell})
            scheduler = ASHAScheduler(time_attr="evaluations", metric="score", mode="max", grace_period=grace, reduction_factor=reduction, max_t=10**6)
            with tempfile.TemporaryDirectory(prefix="bert-tasks-tune-") as storage:  # Tune's own records; the cells write their folders
                tuner = tune.Tuner(trainable, param_space={"cell": tune.grid_search(members)},
                                   tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=1),
                                   run_config=tune.RunConfig(storage_path=storage, name="cells", verbose=0, failure_config=tune.FailureConfig(max_failures=0)))
                if echo:
                    print(f"compare: {len(members)} {group} cells as Tune trials under ASHA (grace {grace} evaluations, reduction {reduction:g})", flush=True)
                grid = tuner.fit()
                for outcome in grid:
                    index = outcome.config["cell"]
                    results[index] = _cell_result(jobs[index], outcome, metric, echo)
    finally:
        if started_here:
            ray.shutdown()
    return [results[i] for i in range(len(jobs))]


def _cell_result(job: CellJob, outcome: Any, metric: Optional[str], echo: bool) -> CellResult:
    log = job.run_dir.parent / f"{job.run_dir.name}.log"
    if outcome.error is not None:
        error = str(outcome.error).strip().splitlines()[-1][:300] if str(outcome.error).strip() else type(outcome.error).__name__
        if echo:
            print(f"{job.where}: FAILED ({error[:200]})", flush=True)
        return CellResult(job, 1, error, log, 1)
    if not (job.run_dir / SUMMARY_FILE).is_file():  # ASHA stopped it
        name, scores = eval_scores(job.run_dir, metric)
        atomic_files.write_json(job.run_dir / STOPPED_FILE, {"metric": name, "evaluations": scores, "by": "ASHA (compare.early_stop=asha)"})
        if echo:
            print(f"{job.where}: stopped early by ASHA after {len(scores)} evaluation(s) ({name} {scores[-1] if scores else float('nan'):.4f})", flush=True)
    elif echo:
        print(f"{job.where}: done", flush=True)
    return CellResult(job, 0, "", log, 1)


def check_asha(early_stop: Optional[str], backend: str, grace: int, reduction: float) -> None:
    if early_stop is None:
        return
    if backend != "ray":
        raise ConfigError("compare.early_stop=asha runs the cells as Ray Tune trials: set compare.backend=ray")
    if grace < 1 or reduction < 2:
        raise ConfigError(f"compare.asha_grace={grace} / compare.asha_reduction={reduction:g}: need at least 1 evaluation and a factor of 2 or more")


def stopped(run_dir: Path) -> Optional[dict[str, Any]]:
    path = run_dir / STOPPED_FILE
    return json.loads(path.read_text()) if path.is_file() else None
