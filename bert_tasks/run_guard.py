"""Who may write into a run folder, and when its old contents may go.

- A folder is a run only when it carries our marker (``bert_tasks_run.json``, written when the
  folder is first used), or, for runs made before the marker existed, our ``config.yaml`` (every
  section) beside our ``task.json`` and ``metrics.jsonl``. Anything else that is not empty is
  never written into or deleted.
- The folder is locked (run_lock.py) from the moment training claims it until it ends.
- A previous run's files are deleted only by ``clear_previous_run``, which training calls after
  the new run's config and data have been read and validated.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import yaml

from . import atomic_files
from .checkpointing import remove_partial_checkpoints
from .config import RunConfig, parse_yaml
from .errors import BertTasksError
from .rundir import CHECKPOINTS_DIR, CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, TASK_FILE
from .run_lock import LOCK_FILE, RunLock

RUN_MARKER = "bert_tasks_run.json"
RUN_SECTIONS = ("model", "task", "strategy", "data", "train", "output")  # what save_config writes


def is_run_dir(folder: Path) -> bool:
    folder = Path(folder)
    return (folder / RUN_MARKER).is_file() or is_unmarked_run(folder)


def is_unmarked_run(folder: Path) -> bool:
    """A run made before the marker existed: our task.json and metrics.jsonl beside a config.yaml
    holding every section we write. A config.yaml plus metrics.jsonl alone is common to many tools."""
    if not all((folder / name).is_file() for name in (CONFIG_FILE, METRICS_FILE, TASK_FILE)):
        return False
    try:
        tree = parse_yaml((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(tree, dict) and all(isinstance(tree.get(section), dict) for section in RUN_SECTIONS)


def holds_state(run_dir: Path) -> bool:
    """A run worth keeping: resumable checkpoints, or a finished summary."""
    return (run_dir / CHECKPOINTS_DIR).is_dir() or (run_dir / SUMMARY_FILE).is_file()


def claim_run_dir(config: RunConfig) -> RunLock:
    """Check the folder may be used as asked, create and mark it, and lock it (main process only).
    Nothing is deleted here: that waits for ``clear_previous_run``."""
    run_dir = config.run_dir
    if run_dir.exists() and not run_dir.is_dir():
        raise BertTasksError(f"{run_dir}: output.dir/output.name point at a file, not a run folder")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not is_run_dir(run_dir):
        raise BertTasksError(
            f"{run_dir}: exists and is not a bert_tasks run folder (no {RUN_MARKER}); nothing was changed "
            "(output.overwrite only ever replaces a run folder) - pick another output.name or output.dir"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / RUN_MARKER).is_file():
        atomic_files.write_json(run_dir / RUN_MARKER, {"tool": "bert_tasks", "created": time.time()})
    lock = RunLock(run_dir).acquire()  # first: a folder in use is reported as such
    if holds_state(run_dir) and not config.train.resume and not config.output.overwrite:
        lock.release()
        raise BertTasksError(
            f"{run_dir}: already holds a run; continue it with train.resume=true, replace it with "
            "output.overwrite=true, or pick another output.name"
        )
    return lock


def remove_if_unused(run_dir: Path) -> None:
    """Remove a run folder this training created and never wrote into (only our marker inside),
    so a training that failed on its input leaves nothing behind."""
    if run_dir.is_dir() and [p.name for p in run_dir.iterdir()] == [RUN_MARKER]:
        (run_dir / RUN_MARKER).unlink()
        run_dir.rmdir()


def remove_leftovers(run_dir: Path) -> None:
    """What a killed training was still writing: temporary files and folders (``.NAME.tmp-PID``,
    ``.NAME.old-PID``) and partial checkpoints. Only ever called with the run folder locked."""
    for path in run_dir.glob(".*"):
        if atomic_files.TEMPORARY_MARK in path.name or ".old-" in path.name:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    remove_partial_checkpoints(run_dir)


def clear_previous_run(run_dir: Path) -> None:
    """Delete what an earlier run left in this (marked, locked) run folder: called when a training
    starts from step 0, after its config and data were validated. The marker and lock stay."""
    for path in run_dir.iterdir():
        if path.name in (RUN_MARKER, LOCK_FILE):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
