"""Whether a run caches its frozen part, where the cut is, and the stores that feed it.

``train.cache_frozen``: ``auto`` caches whenever it is exact and falls back with a one-line notice
when it is not; ``true`` makes each reason a one-line error; ``false`` runs the whole encoder
every step, as before. The cut comes from the model (a task that keeps its encoder frozen: the
whole encoder) or from the strategy (``Strategy.frozen_layers``); nothing here names either.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
from accelerate import Accelerator
from torch import nn

from ..backbone import encoder_layers
from ..batching import EncodedDataset
from ..config import TrainConfig
from ..errors import ConfigError
from ..sharding import is_sharded, sharding_kind
from ..model import TaskModel
from ..strategies.base import Strategy
from ..tasks.base import Task
from .building import GiB, StoreBuilder, StoreSettings, encoder_batches, rows_fingerprint
from .inventory import cache_root
from .cut import FrozenCut, frozen_modules, split_difference, touched_below
from .store import DTYPES, FrozenStore, dtype_name

SPLIT_TOLERANCE = 1e-4  # largest difference (relative to the features' scale) the self-check accepts


@dataclass
class FrozenPlan:
    """What a run does with its frozen part: ``cut`` (None: nothing frozen), whether those modules
    run in eval mode, the stores feeding the trainable part (None: not cached), and the record
    kept in frozen_cache.json and the summary."""

    cut: Optional[FrozenCut] = None
    eval_mode: bool = False
    train: Optional[FrozenStore] = None
    evaluation: dict[str, FrozenStore] = field(default_factory=dict)  # per evaluation set, by its split key ('validation', 'validation.matched')
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def cached(self) -> bool:
        return self.train is not None

    def estimate_uncached(self, train_seconds: float, epochs: float) -> None:
        """Record what training would have taken without the store: one more frozen pass per epoch
        (each pass as long as the measured build). An estimate: benchmarks/cached_strategies.py measures it."""
        if self.cached:
            passes = epochs * float(self.record["train"].get("pass_seconds", 0.0))
            self.record["uncached_train_seconds_estimate"] = round(train_seconds + passes, 2)

    def frozen_modules(self, model: TaskModel) -> list[nn.Module]:
        return frozen_modules(model.encoder, self.cut) if self.eval_mode and self.cut is not None else []


def find_cut(model: TaskModel, strategy: Strategy) -> Optional[FrozenCut]:
    """The frozen lower part: the whole encoder when the task keeps it frozen, else what the strategy declares."""
    total = len(encoder_layers(model.encoder))
    layers = total if not model.encoder_trains else strategy.frozen_layers(model)
    if layers is None:
        return None
    return FrozenCut(layers=layers, total=total, all_states=bool(getattr(model.features, "needs_all_layers", False)))


def why_not_cached(model: TaskModel, task: Task, strategy: Strategy, cut: FrozenCut, tc: TrainConfig, accelerator: Accelerator, probe: Optional[dict[str, torch.Tensor]]) -> Optional[str]:
    """The reason caching this cut would not be exact (or not worth it), or None."""
    if cut.layers == 0 and tc.cache_frozen == "auto":
        return "only the embeddings are frozen (nothing worth storing)"
    if is_sharded(accelerator):
        kind = {"fsdp": "FSDP", "deepspeed": "DeepSpeed ZeRO"}[sharding_kind(accelerator)]
        return f"the model is sharded over the processes ({kind}): the cache would bypass the sharded engine's forward"
    if not task.fixed_inputs:
        return f"task {task.registered_name!r} gives a row new inputs every epoch"
    if tc.frozen_dropout:
        return "train.frozen_dropout=true: the frozen layers must run with dropout every step"
    touched = touched_below(model.encoder, cut)
    if touched:
        return f"strategy {strategy.registered_name!r} declares {cut.layers} frozen layers, but {touched}"
    if probe is not None:
        with accelerator.autocast():
            difference = split_difference(model.encoder, model.features, cut, probe)
        if difference > SPLIT_TOLERANCE:
            return f"running {type(model.encoder).__name__} from layer {cut.layers} on stored states does not reproduce it (difference {difference:.2e})"
    return None


def plan_frozen(tc: TrainConfig, accelerator: Accelerator, model: TaskModel, task: Task, strategy: Strategy,
                train_data: EncodedDataset, eval_data: Sequence[tuple[str, EncodedDataset]] = ()) -> FrozenPlan:
    """Decide, and build or find the stores (on every process, after ``accelerator.prepare``)."""
    cut = find_cut(model, strategy)
    plan = FrozenPlan(cut=cut, eval_mode=cut is not None and tc.frozen_dropout is False)
    plan.record = {"setting": tc.cache_frozen, "cached": False, "cut": None if cut is None else cut.layers,
                   "layers": len(encoder_layers(model.encoder)), "frozen": None if cut is None else cut.describe()}
    if tc.cache_frozen is False:
        plan.record["reason"] = "train.cache_frozen=false"
        return plan
    if not isinstance(train_data, EncodedDataset):
        plan.record["reason"] = "the training rows are streamed (data.streaming), not stored"
        return plan
    if cut is None:
        reason = f"strategy {strategy.registered_name!r} leaves no frozen lower part of the encoder"
        plan.record["reason"] = reason
        if tc.cache_frozen is True:
            raise ConfigError(f"train.cache_frozen=true: {reason}")
        return plan
    head_inputs = tuple(getattr(model.head, "input_names", ()))
    model.eval()
    try:
        probe = _probe_batch(train_data, task, head_inputs, accelerator.device)
        reason = why_not_cached(model, task, strategy, cut, tc, accelerator, probe)
        if reason is None:
            train_rows = rows_fingerprint(train_data, task.collate, head_inputs)  # a row the store cannot hold (not right-padded) fails here
    except ConfigError as error:
        reason = str(error)
    finally:
        model.train()
    if reason is not None:
        plan.record["reason"] = reason
        if tc.cache_frozen is True:
            raise ConfigError(f"train.cache_frozen=true: {reason}")
        if accelerator.is_main_process:
            print(f"bert-tasks: not caching the frozen part: {reason}", file=sys.stderr)
        return plan
    compute_dtype = _computed_dtype(model, cut, accelerator, probe)
    settings = StoreSettings(
        root=cache_root(tc.cache_dir), dtype=compute_dtype if tc.cache_dtype == "auto" else DTYPES[tc.cache_dtype],
        compute_dtype=compute_dtype, memory_budget=int(tc.cache_memory_gb * GiB),
        disk_budget=None if tc.cache_max_gb is None else int(tc.cache_max_gb * GiB), device_budget=int(tc.cache_device_gb * GiB),
        batch_size=tc.eval_batch_size, precision=accelerator.mixed_precision,  # what runs (train.mixed_precision=auto resolved)
    )
    builder = StoreBuilder(accelerator, model.encoder, cut, task.collate, head_inputs, settings)
    plan.eval_mode = True
    plan.train, plan.record["train"] = builder.obtain("train", train_data, rows=train_rows)  # fingerprinted once, above
    for split, data in eval_data:
        plan.evaluation[split], plan.record[split] = builder.obtain(split, data)
    plan.record.update(cached=True, dtype=dtype_name(settings.dtype), compute_dtype=dtype_name(compute_dtype), root=str(settings.root))
    if accelerator.is_main_process:
        print(f"bert-tasks: frozen cache on: {cut.describe()}; the trainable part runs on stored states", file=sys.stderr)
    return plan


def _probe_batch(data: EncodedDataset, task: Task, head_inputs: tuple[str, ...], device: torch.device) -> Optional[dict[str, torch.Tensor]]:
    """Up to 8 rows of different lengths (padding included) for the self-check, on ``device``."""
    if len(data) == 0:
        return None
    order = sorted(range(len(data)), key=lambda i: data.lengths[i])
    rows = sorted({order[round(k * (len(order) - 1) / 7)] for k in range(8)})
    _, inputs = next(encoder_batches(data, task.collate, head_inputs, rows, len(rows)))
    return {name: value.to(device) for name, value in inputs.items()}


@torch.no_grad()
def _computed_dtype(model: TaskModel, cut: FrozenCut, accelerator: Accelerator, probe: Optional[dict[str, torch.Tensor]]) -> torch.dtype:
    """The dtype the frozen part outputs in this run's precision (stores keep it unless told otherwise)."""
    if probe is None:
        return next(model.encoder.parameters()).dtype
    from .cut import run_lower

    model.eval()
    try:
        with accelerator.autocast():
            return run_lower(model.encoder, cut, {k: v[:1] for k, v in probe.items()}).dtype
    finally:
        model.train()


def attach(batch: dict[str, Any], store: Optional[FrozenStore], device: torch.device) -> dict[str, Any]:
    """The batch's inputs with its rows' stored states as ``frozen_states`` (the batch itself when not cached)."""
    if store is not None:
        inputs = batch["inputs"]
        inputs["frozen_states"] = store.gather(batch["index"], inputs["input_ids"].shape[1], device)
    return batch

