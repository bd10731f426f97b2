"""Files of a run directory, and rebuilding a trained model from them (in two steps: ``open_run``
reads the config, tokenizer and task, so input can be checked; ``TrainedRun.load_model`` the weights).

    RUN_DIR/
      config.yaml          the fully resolved RunConfig
      task.json            what the task learned from the data (label names, ...)
      bert_tasks_run.json  marks the folder as a run (only such folders are ever cleared by output.overwrite)
      train.lock           while a training writes here: who (pid, host, start time)
      metrics.jsonl        one JSON object per log/evaluation event
      summary.json         final figures: best metric, parameters, train time, speed
      parameters.json      parameter counts: total, trainable, by group (embeddings, each layer, adapters, head)
      best/                weights of the best evaluation + tokenizer + encoder config; for small-save
                           strategies (adapters, layer mix, LoRA) only the trained weights + base.json
      checkpoints/step-N/  resumable states (model, optimiser, scheduler, RNG, loop state; see checkpointing.py)

Every file here is written under a temporary name and renamed when complete (atomic_files.py);
metrics.jsonl is appended line by line and rewritten atomically when a resume cuts it back.
"""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model
from transformers import AutoConfig, AutoTokenizer

from . import atomic_files
from .assembly import Assembly, build_model, build_task
from .config import RunConfig, config_from_dict, parse_yaml, save_config
from .errors import BertTasksError
from .tasks.base import Task

CONFIG_FILE = "config.yaml"
TASK_FILE = "task.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
PARAMETERS_FILE = "parameters.json"
FROZEN_CACHE_FILE = "frozen_cache.json"  # whether the frozen part was cached, where the cut was, the stores used
BEST_DIR = "best"
CHECKPOINTS_DIR = "checkpoints"
WEIGHTS_FILE = "model.safetensors"
TRAINED_FILE = "trained.safetensors"  # small saves: only the parameters that trained
BASE_FILE = "base.json"  # small saves: which pretrained checkpoint they build on, and its hash


def write_run_files(run_dir: Path, config: RunConfig, task_state: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_files.replacing(run_dir / CONFIG_FILE) as tmp:
        save_config(config, tmp)
    atomic_files.write_json(run_dir / TASK_FILE, task_state)


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """One line per record; a kill can at worst leave a torn last line, which readers skip."""
    with (run_dir / METRICS_FILE).open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):  # only the last line can be torn (a kill mid-append)
                raise BertTasksError(f"{path}, line {number}: not a JSON record") from None
    return records


def keep_metrics_until(run_dir: Path, step: Optional[int]) -> None:
    """Drop the records a killed training wrote after the checkpoint it is resumed from (step None:
    drop every record), so that after a resume each step appears once. Rewritten atomically."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return
    kept = [r for r in read_metrics(run_dir) if step is not None and r.get("step", 0) <= step]
    atomic_files.write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def save_weights(directory: Path, assembly: Assembly, model: Any, whole: Optional[dict[str, torch.Tensor]] = None) -> None:
    """Save the (unwrapped) model's weights with the tokenizer and encoder config beside them.
    ``whole``: the weights gathered from a sharded model (sharding.gathered_weights), saved in their place."""
    tmp = atomic_files.temporary_name(directory)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    if assembly.strategy.small_save:
        trainable = [name for name, p in model.named_parameters() if p.requires_grad]
        trained = {name: whole[name] for name in trainable} if whole is not None else \
            {name: p.detach().contiguous() for name, p in model.named_parameters() if p.requires_grad}
        save_file(trained, str(tmp / TRAINED_FILE))
        config = assembly.model_config
        base = {"checkpoint": config.checkpoint, "revision": config.revision, "sha256": assembly.base_hash}
        (tmp / BASE_FILE).write_text(json.dumps(base, indent=2))
    elif whole is not None:
        save_file(whole, str(tmp / WEIGHTS_FILE))
    else:
        save_model(model, str(tmp / WEIGHTS_FILE))
    assembly.tokenizer.save_pretrained(str(tmp))
    assembly.backbone_config.save_pretrained(str(tmp))
    for path in tmp.iterdir():
        atomic_files.fsync_path(path)
    replace_folder(tmp, directory)  # never leave a half-written best/ behind


def replace_folder(complete: Path, target: Path) -> None:
    """Put the finished folder ``complete`` where ``target`` is: two renames (the old one is moved
    aside first, then removed), so ``target`` is never a mixture of old and new files."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.rename(target, old)
    os.rename(complete, target)
    atomic_files.fsync_path(target.parent)
    if old.exists():
        shutil.rmtree(old)


def load_run_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise BertTasksError(f"{run_dir}: not a run directory (no {CONFIG_FILE})")
    return read_config_file(path)


def read_config_file(path: Path) -> RunConfig:
    """A resolved config as ``save_config`` wrote it (a run's config.yaml, a published training_config.yaml)."""
    tree = parse_yaml(Path(path).read_text())
    return config_from_dict(tree, recipe=tree.get("recipe", "run"))


@dataclass
class SavedModel:
    """A trained model's folder opened without its weights: the config and the task (its tokenizer and
    what it learned from the data). Enough to read, check and encode input, so bad input fails before
    the weights (slow, large) load in ``load_model``."""

    folder: Path
    config: RunConfig
    task: Task

    def load_model(self) -> Assembly:
        """The model with its trained weights, in eval mode."""
        raise NotImplementedError


class TrainedRun(SavedModel):
    """A finished run directory: the weights are in best/."""

    def load_model(self) -> Assembly:
        best = self.folder / BEST_DIR
        if (best / BASE_FILE).is_file():
            assembly = rebuild_small_save(self.config, self.task, self.task.tokenizer, best)
        else:
            backbone_config = AutoConfig.from_pretrained(str(best))
            assembly = build_model(self.config, self.task, self.task.tokenizer, backbone_config)
            with readable_weights(best / WEIGHTS_FILE):
                load_model(assembly.model, str(best / WEIGHTS_FILE))
        assembly.model.eval()
        return assembly


def open_run(run_dir: Path, config: RunConfig | None = None) -> TrainedRun:
    """A finished run's config, tokenizer and task (state from task.json); no weights are read yet."""
    run_dir = Path(run_dir)
    config = config or load_run_config(run_dir)
    best = run_dir / BEST_DIR
    weights = best / (TRAINED_FILE if (best / BASE_FILE).is_file() else WEIGHTS_FILE)
    if not weights.is_file():
        raise BertTasksError(f"{run_dir}: no trained weights at {weights} (did training finish?)")
    tokenizer = AutoTokenizer.from_pretrained(str(best))
    task = build_task(config, tokenizer)
    task.load_state_dict(json.loads((run_dir / TASK_FILE).read_text()))
    return TrainedRun(run_dir, config, task)


def load_trained(run_dir: Path, config: RunConfig | None = None) -> tuple[RunConfig, Assembly]:
    """Rebuild the best model of a finished run, ready for evaluation or prediction."""
    run = open_run(run_dir, config)
    return run.config, run.load_model()


@contextmanager
def readable_weights(path: Path) -> Iterator[None]:
    """A damaged weights file (torn copy, wrong file) as one line naming it, not a deserializer traceback."""
    try:
        yield
    except SafetensorError as error:
        raise BertTasksError(f"{path}: not a readable safetensors weights file ({error})") from None


def rebuild_small_save(config: RunConfig, task: Any, tokenizer: Any, folder: Path) -> Assembly:
    """The pretrained base (checked against the saved hash) plus the trained weights of a small save in ``folder``."""
    weights = folder / TRAINED_FILE
    base = json.loads((folder / BASE_FILE).read_text())
    assembly = build_model(config, task, tokenizer)  # the pretrained base, as in training
    if assembly.base_hash != base["sha256"]:
        raise BertTasksError(
            f"{weights}: trained on checkpoint {base['checkpoint']!r} with sha256 {base['sha256'][:12]}..., "
            f"but that checkpoint now has sha256 {str(assembly.base_hash)[:12]}... (the base weights changed)"
        )
    with readable_weights(weights):
        state = load_file(str(weights))
    known = dict(assembly.model.named_parameters())
    unknown = sorted(set(state) - set(known))
    if unknown:
        raise BertTasksError(f"{weights}: weights {unknown[:3]} do not exist in the rebuilt model (strategy changed?)")
    assembly.model.load_state_dict(state, strict=False)
    return assembly


def weights_size(run_dir: Path) -> int:
    """Bytes of the best checkpoint's weight files (what a user would copy to share the model)."""
    best = Path(run_dir) / BEST_DIR
    return sum(p.stat().st_size for p in best.glob("*.safetensors")) + sum(p.stat().st_size for p in best.glob(BASE_FILE))
