"""Evaluation on any number of processes: length-sorted batches, gather_for_metrics, input order restored."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from .assembly import read_splits
from .batching import EncodedDataset, LengthGroupedBatches
from .config import RunConfig, with_overrides
from .devices import pins_batches, resolve_device
from .errors import BertTasksError
from .eval_sets import EvalSet, eval_sets, results_of, with_prefix
from .frozen.plan import attach
from .frozen.store import FrozenStore
from .registry import TASKS
from .rundir import load_run_config, open_run
from .runtime import make_accelerator
from .sanity import baseline_of, learning_warnings
from .tasks.base import PAD_OUTPUT, Task


def eval_loader(data: EncodedDataset, task: Task, batch_size: int, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """Longest first, no shuffling: least padding; outputs are put back in order by 'index'.
    ``pin_memory`` (for a CUDA device): batches in page-locked memory, so their copy to the GPU is asynchronous."""
    sampler = LengthGroupedBatches(data.lengths, batch_size, shuffle=False)
    return DataLoader(data, batch_sampler=sampler, collate_fn=task.collate, num_workers=num_workers, generator=torch.Generator(), pin_memory=pin_memory)


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
             frozen: Optional[FrozenStore] = None, notes: Optional[list[str]] = None) -> dict[str, float]:
    """The task's metrics plus the loss, over every row of ``data``; ``notes`` collects what the model
    has failed to learn (collapsed predictions, a main metric at or below the trivial baseline: sanity.py)."""
    if "labels" not in data.columns:
        raise BertTasksError("evaluation data has no labels")
    outputs = predict_outputs(accelerator, model, loader, data, task, frozen)
    results = task.compute_metrics(outputs, data)
    results["loss"] = task.evaluation_loss(outputs, data)
    if notes is not None:
        notes.extend(learning_warnings(task, outputs, data, results))
    return results


def warn(notes: list[str], where: str) -> None:
    for note in notes:
        print(f"bert-tasks: warning: {where}: {note}", file=sys.stderr, flush=True)


def evaluate_run(run_dir: Path, overrides: tuple[str, ...] = (), split: str = "validation", device: str = "auto") -> tuple[dict[str, float], Optional[str]]:
    """Metrics of a finished run's best model on one split's sets (data.* overrides allowed; named sets give
    'name/metric' keys), and the task's breakdown tables. What the run tuned (e.g. QA's no-answer threshold)
    is applied as saved; ``task.<key>`` overrides change the task's decoding-time keys (``Task.decoding_keys``).
    ``device``: auto (a GPU when there is one), cpu, cuda, cuda:N or mps."""
    saved = load_run_config(Path(run_dir))
    config = with_overrides(saved, check_evaluate_overrides(saved, overrides))
    sets = eval_sets(config.data, split) if split != "train" else [EvalSet("train", None, config.data.train)]
    if not sets:
        raise BertTasksError(f"data.{split}: not set for this run; give data.{split}=PATH")
    chosen = resolve_device(device)  # the run's own train.cpu (how it trained) does not decide where it evaluates
    config = with_overrides(config, [f"train.cpu={str(chosen.type == 'cpu').lower()}"])
    if chosen.type == "cuda" and device.strip().lower().startswith("cuda:"):
        torch.cuda.set_device(chosen)  # Accelerate's single-process "cuda" is the current device
    splits = read_splits(config, (split,))  # a bad file fails before the weights load
    run = open_run(Path(run_dir), config)  # config, tokenizer and task: no weights yet
    encoded = [(eval_set, run.task.encode(splits[eval_set.split_key])) for eval_set in sets]  # so do bad rows (an unknown label, a bad span, ...)
    assembly = run.load_model()
    accelerator = make_accelerator(config.train)
    model = accelerator.prepare(assembly.model)
    results: dict[str, float] = {}
    for eval_set, data in encoded:
        loader = accelerator.prepare(eval_loader(data, assembly.task, config.train.eval_batch_size, pin_memory=pins_batches(accelerator.device)))
        notes: list[str] = []
        results.update(with_prefix(evaluate(accelerator, model, loader, assembly.task, data, notes=notes), eval_set))
        baseline = baseline_of(assembly.task, data)
        if baseline is not None:
            print(f"bert-tasks: {eval_set.label}: trivial baseline, {baseline.describe(assembly.task.metric_names)}", file=sys.stderr)
        warn(notes, eval_set.label)
    return results, task_reports(assembly.task, results, [s.name for s in sets if s.name])


EVALUATE_KEYS = ("data.", "train.max_eval_samples", "train.eval_batch_size", "train.mixed_precision")


def check_evaluate_overrides(config: RunConfig, overrides: tuple[str, ...]) -> tuple[str, ...]:
    """Evaluation may change where data comes from and how it is batched, and a task's decoding-time keys;
    nothing that would need training again."""
    allowed_task = {f"task.{key}" for key in TASKS.plugin_class(config.task.name).decoding_keys}
    for item in overrides:
        key = item.partition("=")[0].strip()
        if not (key.startswith(EVALUATE_KEYS) or key in allowed_task):
            extra = f", {', '.join(sorted(allowed_task))}" if allowed_task else ""
            raise BertTasksError(f"override {item!r}: evaluate accepts data.*, train.eval_batch_size, train.max_eval_samples, train.mixed_precision{extra}")
    return overrides


def task_reports(task: Task, results: dict[str, float], set_names: list[str]) -> Optional[str]:
    """The task's breakdown table of each evaluation set, headed by the set's name when there are several."""
    if not results:
        return None
    if not set_names:
        return task.report(results)
    tables = []
    for name in set_names:
        table = task.report(results_of(results, f"{name}/", set_names))
        if table:
            tables.append(f"{name}:\n{table}")
    return "\n\n".join(tables) or None
