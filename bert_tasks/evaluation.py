"""Evaluation on any number of processes: length-sorted batches, gather_for_metrics, input order restored."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from .assembly import read_splits
from .batching import EncodedDataset, LengthGroupedBatches
from .config import with_overrides
from .devices import resolve_device
from .errors import BertTasksError
from .frozen.plan import attach
from .frozen.store import FrozenStore
from .rundir import load_run_config, open_run
from .runtime import make_accelerator
from .tasks.base import PAD_OUTPUT, Task


def eval_loader(data: EncodedDataset, task: Task, batch_size: int, num_workers: int = 0) -> DataLoader:
    """Longest first, no shuffling: least padding; outputs are put back in order by 'index'."""
    sampler = LengthGroupedBatches(data.lengths, batch_size, shuffle=False)
    return DataLoader(data, batch_sampler=sampler, collate_fn=task.collate, num_workers=num_workers, generator=torch.Generator())


@torch.no_grad()
def predict_outputs(accelerator: Accelerator, model: torch.nn.Module, loader: DataLoader, data: EncodedDataset, task: Task,
                    frozen: Optional[FrozenStore] = None) -> list[np.ndarray]:
    """The head output of every row of ``data``, in row order (each per-token output trimmed to its row's length).
    ``frozen``: the rows' stored frozen states, when the model runs on them."""
    model.eval()
    outputs, indices = [], []
    for batch in loader:
        attach(batch, frozen, accelerator.device)
        with accelerator.autocast():
            logits = task.predict_step(accelerator.unwrap_model(model), batch)  # Shape: [batch, ...] or [batch, seq, ...]
        if task.outputs_per_token or task.outputs_vary_in_length:
            logits = accelerator.pad_across_processes(logits, dim=1, pad_index=PAD_OUTPUT)
        logits, index = accelerator.gather_for_metrics((logits, batch["index"]))
        outputs.extend(logits.cpu().numpy())
        indices.extend(index.tolist())
    rows: list = [None] * len(data)
    for index, row in zip(indices, outputs):
        rows[index] = row[: data.lengths[index]] if task.outputs_per_token else row
    missing = sum(row is None for row in rows)
    if missing:
        raise BertTasksError(f"evaluation lost {missing} of {len(rows)} rows (uneven batches across processes?)")
    return rows


def evaluate(accelerator: Accelerator, model: torch.nn.Module, loader: DataLoader, task: Task, data: EncodedDataset,
             frozen: Optional[FrozenStore] = None) -> dict[str, float]:
    """The task's metrics plus the loss, over every row of ``data``."""
    if "labels" not in data.columns:
        raise BertTasksError("evaluation data has no labels")
    outputs = predict_outputs(accelerator, model, loader, data, task, frozen)
    results = task.compute_metrics(outputs, data)
    results["loss"] = task.evaluation_loss(outputs, data)
    return results


def evaluate_run(run_dir: Path, overrides: tuple[str, ...] = (), split: str = "validation", device: str = "auto") -> tuple[dict[str, float], Optional[str]]:
    """Metrics of a finished run's best model on one split (data.* overrides allowed), and the task's breakdown table.
    ``device``: auto (a GPU when there is one), cpu, cuda, cuda:N or mps."""
    bad = [o for o in overrides if not o.startswith(("data.", "train.max_eval_samples", "train.eval_batch_size", "train.mixed_precision"))]
    if bad:
        raise BertTasksError(f"override {bad[0]!r}: evaluate accepts data.*, train.eval_batch_size, train.max_eval_samples and train.mixed_precision")
    config = with_overrides(load_run_config(Path(run_dir)), overrides)
    if getattr(config.data, split, None) is None:
        raise BertTasksError(f"data.{split}: not set for this run; give data.{split}=PATH")
    chosen = resolve_device(device)  # the run's own train.cpu (how it trained) does not decide where it evaluates
    config = with_overrides(config, [f"train.cpu={str(chosen.type == 'cpu').lower()}"])
    if chosen.type == "cuda" and device.strip().lower().startswith("cuda:"):
        torch.cuda.set_device(chosen)  # Accelerate's single-process "cuda" is the current device
    rows = read_splits(config, (split,))[split]  # a bad file fails before the weights load
    run = open_run(Path(run_dir), config)  # config, tokenizer and task: no weights yet
    data = run.task.encode(rows)  # so do bad rows (an unknown label, a bad span, ...)
    assembly = run.load_model()
    accelerator = make_accelerator(config.train)
    loader = eval_loader(data, assembly.task, config.train.eval_batch_size)
    model, loader = accelerator.prepare(assembly.model, loader)
    results = evaluate(accelerator, model, loader, assembly.task, data)
    return results, assembly.task.report(results)
