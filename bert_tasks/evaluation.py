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
from .errors import BertTasksError
from .rundir import load_run_config, load_trained
from .runtime import make_accelerator
from .tasks.base import Task


def eval_loader(data: EncodedDataset, task: Task, batch_size: int, num_workers: int = 0) -> DataLoader:
    """Longest first, no shuffling: least padding; outputs are put back in order by 'index'."""
    sampler = LengthGroupedBatches(data.lengths, batch_size, shuffle=False)
    return DataLoader(data, batch_sampler=sampler, collate_fn=task.collate, num_workers=num_workers, generator=torch.Generator())


@torch.no_grad()
def predict_outputs(accelerator: Accelerator, model: torch.nn.Module, loader: DataLoader, size: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Head outputs (and labels, if the data has them) for every example, in input order."""
    model.eval()
    outputs, labels, indices = [], [], []
    for batch in loader:
        logits = model(**batch["inputs"])
        gathered = accelerator.gather_for_metrics((logits.float(), batch["index"]) + ((batch["labels"],) if "labels" in batch else ()))
        outputs.append(gathered[0].cpu())
        indices.append(gathered[1].cpu())
        if len(gathered) > 2:
            labels.append(gathered[2].cpu())
    index = torch.cat(indices).numpy()
    order = np.empty(size, dtype=np.int64)
    order[index] = np.arange(len(index))  # duplicates (none after gather_for_metrics) would collapse here
    out = torch.cat(outputs).numpy()[order]
    lab = torch.cat(labels).numpy()[order] if labels else None
    return out, lab


def evaluate(accelerator: Accelerator, model: torch.nn.Module, loader: DataLoader, task: Task, size: int) -> dict[str, float]:
    outputs, labels = predict_outputs(accelerator, model, loader, size)
    if labels is None:
        raise BertTasksError("evaluation data has no labels")
    results = task.compute_metrics(outputs, labels)
    results["loss"] = float(task.loss(torch.from_numpy(outputs), torch.from_numpy(labels)))
    return results


def evaluate_run(run_dir: Path, overrides: tuple[str, ...] = (), split: str = "validation") -> dict[str, float]:
    """Metrics of a finished run's best model on one split (data.* overrides allowed)."""
    bad = [o for o in overrides if not o.startswith(("data.", "train.max_eval_samples", "train.eval_batch_size", "train.mixed_precision"))]
    if bad:
        raise BertTasksError(f"override {bad[0]!r}: evaluate accepts data.*, train.eval_batch_size, train.max_eval_samples and train.mixed_precision")
    config = with_overrides(load_run_config(Path(run_dir)), overrides)
    if getattr(config.data, split, None) is None:
        raise BertTasksError(f"data.{split}: not set for this run; give data.{split}=PATH")
    config, assembly = load_trained(Path(run_dir), config)
    accelerator = make_accelerator(config.train)
    data = assembly.task.encode(read_splits(config, (split,))[split])
    loader = eval_loader(data, assembly.task, config.train.eval_batch_size)
    model, loader = accelerator.prepare(assembly.model, loader)
    return evaluate(accelerator, model, loader, assembly.task, len(data))
