"""Where a training run stands, and resumable checkpoints of it: written atomically, read without pickle.

    checkpoints/step-0000010/
      model.safetensors          every weight of the model (gathered whole from a sharded run)
      optimizer.pt scheduler.pt  plain state dicts (tensors, numbers, lists) via torch.save,
      [scaler.pt]                read back with torch.load(weights_only=True): no code can run
      [optimizer-<i>-of-<n>.*]   instead of optimizer.pt under DeepSpeed ZeRO: each process's own
                                 partition, in safetensors + JSON (zero_state)
      trainer_state.json         the loop's position (TrainerState) and the micro-step counter
      process-<i>.json           per process: python's and numpy's random generator states and
                                 the training loss summed since the last loss record
      process-<i>.safetensors    per process: torch's CPU (and CUDA/MPS) generator states and the
                                 training loader's generator, as they were when the epoch began
      manifest.json              written last: size and sha256 of every file above

A checkpoint is written into ``checkpoints/.step-0000010.partial`` and renamed to ``step-0000010``
when complete, so a folder named ``step-*`` with a matching manifest is whole. Resume takes the
newest such folder; one that is incomplete or damaged is skipped with a one-line notice.
Files that are not in the manifest (e.g. a ``*.pkl`` planted there) are never opened.
"""
from __future__ import annotations

import json
import random
import shutil
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from accelerate import Accelerator
from safetensors.torch import load_file, load_model, save_file, save_model

from . import atomic_files
from .errors import BertTasksError
from .rundir import CHECKPOINTS_DIR, replace_folder
from .sharding import (gathered_optimizer_state, gathered_weights, load_whole_optimizer_state, load_whole_weights, sharding_kind,
                       zero_stage)
from .zero_state import file_names, load_partition, save_partition

MANIFEST_FILE = "manifest.json"
STATE_FILE = "trainer_state.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
SCALER_FILE = "scaler.pt"
PARTIAL_SUFFIX = ".partial"
# how a checkpoint's optimiser state is laid out, by the kind of sharding that wrote it
OPTIMIZER_KEYS = {None: "positions", "fsdp": "names", "deepspeed": "zero-partitions"}
LAUNCHES = {"positions": "no sharding", "names": "FSDP", "zero-partitions": "DeepSpeed ZeRO"}


@dataclass
class TrainerState:
    """Saved with every checkpoint (as JSON), so resume continues exactly."""

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

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainerState":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class Resumable:
    """What a checkpoint restores besides the loop's position (the prepared objects)."""

    model: torch.nn.Module
    optimizer: Any
    scheduler: Any
    loader_generator: torch.Generator  # the training DataLoader's own generator


def step_name(step: int) -> str:
    return f"step-{step:07d}"


def _step_of(folder: Path) -> int:
    return int(folder.name.split("-")[1])


def step_folders(run_dir: Path) -> list[Path]:
    """Every ``step-N`` folder, complete or not, oldest first."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step-*") if p.is_dir() and p.name[5:].isdigit()]
    return sorted(found, key=_step_of)


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints (those with a manifest), oldest first."""
    return [p for p in step_folders(run_dir) if (p / MANIFEST_FILE).is_file()]


def remove_partial_checkpoints(run_dir: Path) -> None:
    """Folders a killed training was still writing (main process, run folder locked)."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if root.is_dir():
        for partial in root.glob(f".step-*{PARTIAL_SUFFIX}"):
            print(f"bert-tasks: removing {partial}: a checkpoint a killed training did not finish writing", file=sys.stderr)
            shutil.rmtree(partial, ignore_errors=True)


# ---- saving -------------------------------------------------------------------------------------

def _process_state(loader_rng: torch.Tensor, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """This process's generator states and ``values``: (JSON-able part, tensors for safetensors)."""
    version, internal, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    plain = {"python": [version, list(internal), gauss], "numpy": [name, keys.tolist(), int(position), int(has_gauss), float(cached)], "values": values}
    tensors = {"torch_cpu": torch.get_rng_state(), "loader": loader_rng.clone()}
    if torch.cuda.is_available():
        tensors.update({f"cuda_{i}": state for i, state in enumerate(torch.cuda.get_rng_state_all())})
    if torch.backends.mps.is_available():
        tensors["mps"] = torch.mps.get_rng_state()
    return plain, tensors


def save_checkpoint(
    accelerator: Accelerator, run_dir: Path, state: TrainerState, pieces: Resumable, loader_rng: torch.Tensor,
    process_values: dict[str, Any], keep: int,
) -> Path:
    """Write a resumable checkpoint of this step atomically, then drop the oldest beyond ``keep``
    (0 keeps all). The main process writes the shared state; every process writes its own
    generators and ``process_values`` (JSON-able numbers that differ between processes)."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    target = root / step_name(state.global_step)
    partial = root / f".{target.name}{PARTIAL_SUFFIX}"
    main = accelerator.is_main_process
    if main:
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    plain, tensors = _process_state(loader_rng, process_values)
    index = accelerator.process_index
    (partial / f"process-{index}.json").write_text(json.dumps(plain))
    save_file(tensors, str(partial / f"process-{index}.safetensors"))
    kind = sharding_kind(accelerator)
    if kind:  # every process takes part in the gathers; the main process writes the whole weights
        weights = gathered_weights(accelerator, pieces.model)
    if kind == "fsdp":
        optimizer_state = gathered_optimizer_state(accelerator, pieces.model, pieces.optimizer)
    elif kind == "deepspeed":  # partitions stay partitioned: each process writes its own
        save_partition(pieces.optimizer.optimizer, partial, index, accelerator.num_processes)
    if main:
        if kind:
            save_file(weights, str(partial / MODEL_FILE))
        if kind == "fsdp":
            torch.save(optimizer_state, partial / OPTIMIZER_FILE)
        elif kind is None:
            save_model(accelerator.unwrap_model(pieces.model), str(partial / MODEL_FILE))
            torch.save(pieces.optimizer.state_dict(), partial / OPTIMIZER_FILE)
        torch.save(pieces.scheduler.state_dict(), partial / SCHEDULER_FILE)
        if accelerator.scaler is not None:
            torch.save(accelerator.scaler.state_dict(), partial / SCALER_FILE)
        loop = {"trainer": asdict(state), "accelerator_step": accelerator.step, "processes": accelerator.num_processes,
                "optimizer_keys": OPTIMIZER_KEYS[kind], **({"zero_stage": zero_stage(accelerator)} if kind == "deepspeed" else {})}
        (partial / STATE_FILE).write_text(json.dumps(loop, indent=2))
    accelerator.wait_for_everyone()
    if main:
        _write_manifest(partial, state.global_step)
        replace_folder(partial, target)
        _prune(run_dir, state.global_step, keep)
    accelerator.wait_for_everyone()
    return target


def _write_manifest(folder: Path, step: int) -> None:
    files = {}
    for path in sorted(folder.iterdir()):
        atomic_files.fsync_path(path)
        files[path.name] = {"bytes": path.stat().st_size, "sha256": atomic_files.sha256_of(path)}
    atomic_files.write_json(folder / MANIFEST_FILE, {"step": step, "files": files})


def _prune(run_dir: Path, step: int, keep: int) -> None:
    """Keep the newest ``keep`` complete checkpoints up to ``step``, the one just written (all if 0);
    incomplete folders go, and so do folders past ``step`` (left by a killed run, skipped on resume
    as damaged): the newest intact checkpoint is never removed."""
    complete = [p for p in checkpoint_dirs(run_dir) if _step_of(p) <= step]
    kept = set(complete[-keep:] if keep > 0 else complete)
    for folder in step_folders(run_dir):
        if folder not in kept:
            shutil.rmtree(folder, ignore_errors=True)


# ---- resuming -----------------------------------------------------------------------------------

def _damage(folder: Path) -> Optional[str]:
    """Why ``folder`` cannot be resumed from (None: it is complete and intact)."""
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        return "incomplete (no manifest; a kill while writing, or a checkpoint of an older bert_tasks)"
    try:
        manifest = json.loads(manifest_path.read_text())
        listed = manifest["files"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        return f"{MANIFEST_FILE} is unreadable"
    for required in (MODEL_FILE, SCHEDULER_FILE, STATE_FILE):
        if required not in listed:
            return f"{MANIFEST_FILE} does not list {required}"
    partitions = [name for name in listed if name.startswith("optimizer-0-of-") and name.endswith(".safetensors")]
    if partitions:  # DeepSpeed ZeRO: every process's partition
        count = partitions[0][len("optimizer-0-of-"):-len(".safetensors")]
        expected = [name for i in range(int(count) if count.isdigit() else 0) for name in file_names(i, int(count))]
        absent = [name for name in expected if name not in listed]
        if absent or not expected:
            return f"{MANIFEST_FILE} does not list {absent[0] if absent else 'the optimiser partitions'}"
    elif OPTIMIZER_FILE not in listed:
        return f"{MANIFEST_FILE} does not list {OPTIMIZER_FILE}"
    for name, expected in listed.items():
        path = folder / name
        if Path(name).name != name or not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected.get("bytes"):
            return f"{name} has {path.stat().st_size} bytes, the manifest says {expected.get('bytes')}"
        if atomic_files.sha256_of(path) != expected.get("sha256"):
            return f"{name} does not match its sha256 in the manifest"
    return None


def find_resumable(run_dir: Path) -> Optional[Path]:
    """The newest intact checkpoint; every newer one that is not is named in a one-line notice."""
    for folder in reversed(step_folders(run_dir)):
        problem = _damage(folder)
        if problem is None:
            return folder
        print(f"bert-tasks: skipping checkpoint {folder}: {problem}", file=sys.stderr)
    return None


def _torch_state(path: Path) -> Any:
    """A plain state dict saved with torch.save; refuses anything that would need pickle's code paths."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any refusal or damage is one line
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BertTasksError(f"{path}: refused to load (only plain tensors and numbers are read, never pickled objects): {first[:160]}") from None


def load_checkpoint(accelerator: Accelerator, folder: Path, pieces: Resumable) -> tuple[TrainerState, dict[str, Any]]:
    """Restore model, optimiser, schedule, scaler, RNG and the loop's position from ``folder``
    (every process reads; the folder was checked by ``find_resumable`` on the main process).
    Returns the loop's position and this process's saved values."""
    folder = Path(folder)
    try:
        loop = json.loads((folder / STATE_FILE).read_text())
        state = TrainerState.from_dict(loop["trainer"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise BertTasksError(f"{folder / STATE_FILE}: not a trainer state ({error})") from None
    kind = sharding_kind(accelerator)
    saved_keys = loop.get("optimizer_keys", "positions")
    if saved_keys != OPTIMIZER_KEYS[kind]:
        raise BertTasksError(f"{folder}: saved by a run with {LAUNCHES.get(saved_keys, saved_keys)}, this one has {LAUNCHES[OPTIMIZER_KEYS[kind]]}; "
                             f"resume it with the same kind of launch ({LAUNCHES.get(saved_keys, saved_keys)})")
    if kind == "deepspeed":
        saved = (loop.get("processes"), loop.get("zero_stage"))
        if saved != (accelerator.num_processes, zero_stage(accelerator)):
            raise BertTasksError(f"{folder}: saved by {saved[0]} processes at ZeRO stage {saved[1]}, this run has {accelerator.num_processes} "
                                 f"at stage {zero_stage(accelerator)}; each process's optimiser partition resumes only in the same layout")
    try:
        if kind:
            load_whole_weights(accelerator, pieces.model, load_file(str(folder / MODEL_FILE)), str(folder / MODEL_FILE))
        else:
            load_model(accelerator.unwrap_model(pieces.model), str(folder / MODEL_FILE), strict=True)
    except (RuntimeError, OSError) as error:
        raise BertTasksError(f"{folder / MODEL_FILE}: does not fit this run's model ({str(error).splitlines()[0][:200]})") from None
    if kind == "fsdp":
        load_whole_optimizer_state(accelerator, pieces.model, pieces.optimizer, _torch_state(folder / OPTIMIZER_FILE))
    elif kind == "deepspeed":
        load_partition(pieces.optimizer.optimizer, folder, accelerator.process_index, accelerator.num_processes)
    else:
        pieces.optimizer.load_state_dict(_torch_state(folder / OPTIMIZER_FILE))
    pieces.scheduler.load_state_dict(_torch_state(folder / SCHEDULER_FILE))
    if accelerator.scaler is not None and (folder / SCALER_FILE).is_file():
        accelerator.scaler.load_state_dict(_torch_state(folder / SCALER_FILE))
    accelerator.step = int(loop.get("accelerator_step", 0))
    return state, _restore_process_state(folder, accelerator.process_index, pieces.loader_generator)


def _restore_process_state(folder: Path, index: int, loader_generator: torch.Generator) -> dict[str, Any]:
    plain_path, tensor_path = folder / f"process-{index}.json", folder / f"process-{index}.safetensors"
    if not (plain_path.is_file() and tensor_path.is_file()):
        if index == 0:
            raise BertTasksError(f"{folder}: no generator states for process {index}")
        print(f"bert-tasks: {folder}: saved with fewer processes; process {index} keeps its seeded generators", file=sys.stderr)
        return {}
    plain = json.loads(plain_path.read_text())
    version, internal, gauss = plain["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = plain["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    tensors = load_file(str(tensor_path))
    torch.set_rng_state(tensors["torch_cpu"])
    loader_generator.set_state(tensors["loader"])
    cuda = [tensors[f"cuda_{i}"] for i in range(torch.cuda.device_count()) if f"cuda_{i}" in tensors] if torch.cuda.is_available() else []
    if cuda:
        torch.cuda.set_rng_state_all(cuda)
    if "mps" in tensors and torch.backends.mps.is_available():
        torch.mps.set_rng_state(tensors["mps"])
    return plain.get("values", {})
