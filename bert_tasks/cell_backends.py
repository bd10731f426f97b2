"""Where the cells of a comparison or a suite train: one after another on this machine (``local``), or as
Ray tasks spread over a local Ray instance or a cluster (``ray``).

A cell is always an ordinary run directory trained by ``python -m bert_tasks train RECIPE`` in a
process of its own (``comparison.train_in_own_process``), so resume, reports and plots do not depend
on the backend. With Ray each cell is a task declaring ``cpus_per_cell`` / ``gpus_per_cell`` (Ray
sets the GPUs it may see; the cell's torch threads follow its CPUs); run directories must be on
storage every node sees (a shared file system), as the cells write where the recipe says. A failed
cell is tried again up to ``max_retries`` times, resuming from its last checkpoint, then reported
with its error while the other cells go on.
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from .errors import ConfigError

Backend = Literal["local", "ray"]


@dataclass(frozen=True)
class CellJob:
    tree: dict[str, Any]  # the cell's full training recipe
    run_dir: Path
    recipe: Path  # where the recipe is written
    where: str  # '[3/8] lora lr=0.001 seed=1': how messages name the cell


@dataclass
class CellResult:
    job: CellJob
    returncode: int
    error: str  # the log's last line when the cell failed
    log: Path
    attempts: int

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass(frozen=True)
class BackendOptions:
    backend: Backend = "local"
    address: Optional[str] = None  # ray: None starts a local instance; 'auto' or 'ray://host:10001' joins a cluster
    cpus_per_cell: float = 1.0
    gpus_per_cell: float = 0.0
    max_retries: int = 0

    def check(self, section: str) -> None:
        if self.cpus_per_cell <= 0 or self.gpus_per_cell < 0:
            raise ConfigError(f"{section}.cpus_per_cell must be above 0 and {section}.gpus_per_cell 0 or more")
        if self.max_retries < 0:
            raise ConfigError(f"{section}.max_retries={self.max_retries}: must be 0 or more")
        if self.backend == "local" and self.address is not None:
            raise ConfigError(f"{section}.address: only used with {section}.backend=ray")


def run_jobs(jobs: list[CellJob], options: BackendOptions, section: str = "compare", echo: bool = True) -> list[CellResult]:
    """Train every job; returns one result per job, in job order."""
    if not jobs:
        return []
    if options.backend == "ray":
        return _run_on_ray(jobs, options, section, echo)
    return [train_with_retries(job, options.max_retries, echo) for job in jobs]


def train_with_retries(job: CellJob, max_retries: int, echo: bool = True) -> CellResult:
    """One cell, tried again (resuming from its last checkpoint) up to ``max_retries`` times."""
    from .comparison import train_in_own_process

    for attempt in range(1, max_retries + 2):
        returncode, error, log = train_in_own_process(dict(job.tree), job.run_dir, job.recipe, job.where, echo)
        if returncode == 0 or attempt > max_retries:
            return CellResult(job, returncode, error, log, attempt)
        if echo:
            print(f"{job.where}: failed ({error[:160]}); retry {attempt} of {max_retries}", file=sys.stderr, flush=True)
    raise AssertionError("unreachable")


def _ray_module(section: str) -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(f"{section}.backend=ray: Ray is not installed; pip install 'bert_tasks[ray]' (or: pip install 'ray>=2.60')") from None
    return ray


def _train_in_ray_task(job: CellJob, max_retries: int, threads: int) -> CellResult:
    """What one Ray task runs on its node: the cell's own process, with as many torch threads as CPUs it declared."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return train_with_retries(job, max_retries, echo=False)


def _run_on_ray(jobs: list[CellJob], options: BackendOptions, section: str, echo: bool) -> list[CellResult]:
    ray = _ray_module(section)
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=options.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except ConnectionError as error:
            raise ConfigError(f"{section}.address={options.address!r}: no Ray cluster there ({str(error).splitlines()[0][:160]}); start one with `ray start --head`") from None
    try:
        task = ray.remote(num_cpus=options.cpus_per_cell, num_gpus=options.gpus_per_cell, max_retries=0)(_train_in_ray_task)
        threads = max(1, math.floor(options.cpus_per_cell))
        pending = {task.remote(job, options.max_retries, threads): index for index, job in enumerate(jobs)}
        if echo:
            print(f"{section}: {len(jobs)} cells as Ray tasks ({options.cpus_per_cell:g} CPU, {options.gpus_per_cell:g} GPU each)", flush=True)
        results: list[Optional[CellResult]] = [None] * len(jobs)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(done[0])
            job = jobs[index]
            try:
                result = ray.get(done[0])
            except Exception as error:  # the task itself died (node lost, worker killed): the cell's folder keeps its checkpoints
                result = CellResult(job, -1, f"Ray task failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}", job.run_dir.parent / f"{job.run_dir.name}.log", 1)
            results[index] = result
            if echo:
                print(f"{job.where}: {'done' if result.ok else 'FAILED (' + result.error[:200] + ')'}", flush=True)
        return [r for r in results if r is not None]
    finally:
        if started_here:
            ray.shutdown()
