"""Where a training run stands, and resumable Accelerate checkpoints of it."""
from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from accelerate import Accelerator

from .rundir import CHECKPOINTS_DIR


@dataclass
class TrainerState:
    """Saved with every checkpoint (``register_for_checkpointing``), so resume continues exactly."""

    global_step: int = 0  # optimiser steps taken
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches of the current epoch already consumed
    samples_seen: int = 0
    train_seconds: float = 0.0  # time in forward/backward/step, not in evaluation or saving
    best_value: Optional[float] = None
    best_step: Optional[int] = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    evals_without_improvement: int = 0
    finished: bool = False

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    root = run_dir / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    return sorted((p for p in root.glob("step-*") if p.is_dir()), key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(accelerator: Accelerator, run_dir: Path, step: int, keep: int) -> None:
    """Save a resumable state and drop the oldest beyond ``keep`` (0 keeps all)."""
    target = run_dir / CHECKPOINTS_DIR / f"step-{step:07d}"
    accelerator.save_state(str(target))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and keep > 0:
        for old in checkpoint_dirs(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    found = checkpoint_dirs(run_dir)
    return found[-1] if found else None
