"""Finding or building the store of one split: its key, its size, the disk, the lock, the pass.

The key is a sha256 over everything that determines the stored values: the encoder's class and
config, the frozen weights themselves (so a checkpoint, a revision or a local path with the same
weights share a store, and changed weights never do), every row's encoder inputs as collated
(tokenizer, encoding settings and data in one), the cut, the dtypes, the precision and device
kind the values were computed in, and the torch / transformers versions. A changed key is a
different folder: it is built, never reused.

Building on N processes: each computes the rows ``i % N == rank`` into its own shard of a
``.KEY.building`` folder that only the holder of ``KEY.lock`` writes; the main process then adds
the manifest and renames the folder to ``KEY``. A killed build leaves only the ``.building``
folder and a stale lock, which the next build takes over and replaces.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import transformers
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader

from ..atomic_files import fsync_path, write_json
from ..backbone import encoder_layers
from ..batching import EncodedDataset
from ..errors import BertTasksError, ConfigError
from ..parameters import weights_hash
from ..run_lock import RunLock
from ..runtime import same_on_every_process
from .cut import FrozenCut, run_lower
from .inventory import FORMAT, MANIFEST, read_manifest
from .store import FrozenStore, ShardWriter, dtype_name

DISK_MARGIN = 512 * 2**20  # free space a build leaves on the disk beyond the store itself
GiB = 2**30


@dataclass(frozen=True)
class StoreSettings:
    """What the train section says about stores, plus what the run computes in."""

    root: Path
    dtype: torch.dtype  # how values are stored
    compute_dtype: torch.dtype  # what the frozen part outputs in this run's precision
    memory_budget: int  # bytes per process; a bigger store is memory-mapped
    disk_budget: Optional[int]  # bytes a store may take on disk (None: what the disk has free)
    device_budget: int  # bytes of GPU memory the store may take there
    batch_size: int
    precision: str


def frozen_weights_hash(encoder: nn.Module, cut: FrozenCut) -> str:
    """sha256 over the names and values of every encoder tensor below the cut (all but layers k..L-1)."""
    above = {id(layer) for layer in list(encoder_layers(encoder))[cut.layers :]}
    prefixes = tuple(f"{name}." for name, module in encoder.named_modules() if id(module) in above)
    return weights_hash(encoder, exclude={name for name in encoder.state_dict() if name.startswith(prefixes)})


def encoder_batches(data: EncodedDataset, collate: Callable, head_inputs: tuple[str, ...], rows: list[int], batch_size: int):
    """(row indices, the encoder's inputs on the CPU) for ``rows`` in batches of ``batch_size``, collated
    by the task as its training batches are (through a DataLoader, which builds CPU batches by design)."""
    chunks = [rows[start : start + batch_size] for start in range(0, len(rows), batch_size)]
    loader = DataLoader(data, batch_sampler=chunks, collate_fn=collate, generator=torch.Generator())  # own seed source: the global RNG (dropout) stays as it was
    for chunk, batch in zip(chunks, loader):
        yield chunk, {name: value for name, value in batch["inputs"].items() if name not in head_inputs}


def rows_fingerprint(data: EncodedDataset, collate: Callable, head_inputs: tuple[str, ...]) -> str:
    """sha256 over every row's encoder inputs (trimmed to the row's length, so padding never counts).
    Raises ConfigError when a row is not right-padded (the store keeps a row's first tokens)."""
    digest = hashlib.sha256()
    for chunk, inputs in encoder_batches(data, collate, head_inputs, list(range(len(data))), 256):
        mask = inputs.get("attention_mask")
        for position, row in enumerate(chunk):
            length = data.lengths[row]
            if mask is not None and (int(mask[position, :length].sum()) != length or int(mask[position, length:].sum()) != 0):
                raise ConfigError(f"row {row}: its attention mask is not {length} ones then padding (the store keeps each row's first tokens)")
            for name in sorted(inputs):
                values = inputs[name][position]
                values = values[:length] if values.dim() else values
                digest.update(name.encode())
                digest.update(values.to(torch.int64).numpy().tobytes())
    return digest.hexdigest()


def store_key(encoder: nn.Module, cut: FrozenCut, data: EncodedDataset, collate: Callable, head_inputs: tuple[str, ...], settings: StoreSettings,
              device: torch.device, rows: Optional[str] = None) -> str:
    """``rows``: the data's ``rows_fingerprint`` when the caller already has it."""
    config = {k: v for k, v in encoder.config.to_dict().items() if k != "_name_or_path" and "dropout" not in k}
    parts = {
        "format": FORMAT, "torch": torch.__version__, "transformers": transformers.__version__,
        "encoder": type(encoder).__name__, "config": config, "attention": getattr(encoder.config, "_attn_implementation", None),
        "weights": frozen_weights_hash(encoder, cut), "rows": rows or rows_fingerprint(data, collate, head_inputs),
        "cut": cut.layers, "all_states": cut.all_states, "dtype": dtype_name(settings.dtype),
        "compute_dtype": dtype_name(settings.compute_dtype), "precision": settings.precision, "device": device.type,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:40]


def estimated_bytes(data: EncodedDataset, cut: FrozenCut, hidden: int, dtype: torch.dtype) -> int:
    return sum(data.lengths) * cut.states * hidden * torch.finfo(dtype).bits // 8


def describe_size(size: int) -> str:
    return f"{size / 2**20:,.1f} MB" if size < GiB else f"{size / GiB:,.2f} GB"


def disk_shortfall(root: Path, size: int, budget: Optional[int]) -> Optional[str]:
    """Why a store of ``size`` bytes cannot be written under ``root``, or None."""
    if budget is not None and size > budget:
        return f"it needs {describe_size(size)} but train.cache_max_gb allows {describe_size(budget)}"
    probe = root
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if size + DISK_MARGIN > free:
        return f"it needs {describe_size(size)} (+{describe_size(DISK_MARGIN)} to spare) but {probe} has {describe_size(free)} free"
    return None


class StoreBuilder:
    """Finds or builds the store of one split for a training on any number of processes."""

    def __init__(self, accelerator: Accelerator, encoder: nn.Module, cut: FrozenCut, collate: Callable, head_inputs: tuple[str, ...], settings: StoreSettings) -> None:
        self.accelerator, self.encoder, self.cut, self.collate, self.head_inputs, self.settings = accelerator, encoder, cut, collate, head_inputs, settings
        self.main = accelerator.is_main_process

    def obtain(self, split: str, data: EncodedDataset, rows: Optional[str] = None) -> tuple[FrozenStore, dict[str, Any]]:
        """The split's store and what to record about it (key, size, built / reused / in memory, seconds)."""
        settings, accelerator = self.settings, self.accelerator
        size = estimated_bytes(data, self.cut, self.encoder.config.hidden_size, settings.dtype)
        key = store_key(self.encoder, self.cut, data, self.collate, self.head_inputs, settings, accelerator.device, rows)
        folder = settings.root / key
        record: dict[str, Any] = {"key": key, "rows": len(data), "tokens": int(sum(data.lengths)), "bytes": size, "folder": str(folder)}
        lock, code, failure = None, -2, None
        if self.main:
            try:
                lock, code = self._decide(folder, size, split)
            except BertTasksError as error:
                failure = error
        code = same_on_every_process(accelerator, code)
        if failure is not None:
            raise failure
        if code == -2:
            raise BertTasksError(f"frozen cache ({split}): the main process could not prepare {folder} (its error says why)")
        try:
            if code == 0:
                record.update(how="reused", build_seconds=0.0)
            else:
                self._announce(split, data, size, "in memory only" if code == 2 else str(folder))
                started = time.perf_counter()
                store = self._build(data, folder if code == 1 else None, key)
                record.update(how="built" if code == 1 else "in memory", build_seconds=round(time.perf_counter() - started, 2))
                if self.main:
                    print(f"bert-tasks: frozen cache ({split}): built in {record['build_seconds']:.1f} s", file=sys.stderr)
            if code != 2:
                store = FrozenStore.open(folder, data.lengths, settings.memory_budget)
            # one pass of the frozen part over the split, as measured when the store was built: what
            # every epoch (or evaluation) would cost again without the store
            record["pass_seconds"] = float(store.manifest.get("pass_seconds", record["build_seconds"]))
        finally:
            if lock is not None:
                lock.release()
        store.place(accelerator.device, settings.device_budget)
        record["mapped"] = store.mapped
        return store, record

    def _decide(self, folder: Path, size: int, split: str) -> tuple[Optional[RunLock], int]:
        """Main process: 0 reuse ``folder``, 1 build it (lock held, building folder ready), 2 build in memory."""
        settings = self.settings
        if self._usable(folder):
            return None, 0
        short = disk_shortfall(settings.root, size, settings.disk_budget)
        if short is not None:
            if size <= settings.memory_budget:
                print(f"bert-tasks: frozen cache ({split}): not written to disk ({short}); kept in memory for this run only", file=sys.stderr)
                return None, 2
            raise ConfigError(f"train.cache_frozen: the {split} store cannot be built: {short}; free space, set train.cache_dir, "
                              "train.cache_dtype=bfloat16 (half the size) or train.cache_frozen=false")
        settings.root.mkdir(parents=True, exist_ok=True)
        lock = self._lock(folder)
        if self._usable(folder):  # another run built it while we waited
            lock.release()
            return None, 0
        building = folder.with_name(f".{folder.name}.building")
        shutil.rmtree(building, ignore_errors=True)  # a killed build's leftovers (ours: only the lock holder writes here)
        if folder.exists():
            shutil.rmtree(folder)  # damaged (checked above): a store folder is only ever ours
        building.mkdir()
        return lock, 1

    def _usable(self, folder: Path) -> bool:
        manifest = read_manifest(folder)
        if manifest is None:
            return False
        try:
            FrozenStore.open(folder, [0] * int(manifest["rows"]), memory_budget=0)  # sizes checked, nothing read
        except (BertTasksError, KeyError, ValueError, OSError) as error:
            print(f"bert-tasks: {folder}: damaged frozen cache ({str(error).splitlines()[0][:120]}); building it again", file=sys.stderr)
            return False
        return manifest.get("key") == folder.name

    def _lock(self, folder: Path) -> RunLock:
        """The build lock of ``folder``; while another live run holds it, wait (it is building the same store)."""
        waited = False
        while True:
            try:
                return RunLock(folder.parent, f"{folder.name}.lock").acquire()
            except BertTasksError:
                if not waited:
                    print(f"bert-tasks: {folder}: another run is building this frozen cache; waiting for it", file=sys.stderr)
                    waited = True
                time.sleep(1.0)

    def _announce(self, split: str, data: EncodedDataset, size: int, where: str) -> None:
        if self.main:
            cut, settings = self.cut, self.settings
            print(f"bert-tasks: frozen cache ({split}): {len(data):,} rows, {sum(data.lengths):,} tokens x {cut.states} state(s) x "
                  f"{self.encoder.config.hidden_size} in {dtype_name(settings.dtype)} = {describe_size(size)}; building it ({where}) ...", file=sys.stderr)

    @torch.no_grad()
    def _build(self, data: EncodedDataset, folder: Optional[Path], key: str) -> Optional[FrozenStore]:
        """Compute this process's rows (all rows in memory-only mode); on disk the main process publishes the folder."""
        accelerator, settings = self.accelerator, self.settings
        shards, rank = (accelerator.num_processes, accelerator.process_index) if folder is not None else (1, 0)
        building = folder.with_name(f".{folder.name}.building") if folder is not None else None
        mine = sorted(range(rank, len(data), shards), key=lambda i: data.lengths[i], reverse=True)  # least padding
        writer = ShardWriter(building, rank, len(range(rank, len(data), shards)), settings.dtype)
        was_training = self.encoder.training
        self.encoder.eval()
        started = time.perf_counter()
        try:
            for chunk, inputs in encoder_batches(data, self.collate, self.head_inputs, mine, settings.batch_size):
                inputs = {name: value.to(accelerator.device) for name, value in inputs.items()}
                with accelerator.autocast():
                    states = run_lower(self.encoder, self.cut, inputs)  # Shape: [batch, seq, states, hidden]
                states = states.to(settings.dtype).cpu()  # one copy per batch, not one per row
                for position, row in enumerate(chunk):
                    writer.add(row // shards, states[position, : data.lengths[row]])
        finally:
            self.encoder.train(was_training)
        values = writer.finish()
        manifest = {**self._manifest(data, key, shards), "pass_seconds": round(time.perf_counter() - started, 3)}
        if folder is None:
            return FrozenStore.in_memory(values if values is not None else torch.zeros((0, self.cut.states, self.encoder.config.hidden_size), dtype=settings.dtype, device="cpu"),
                                         writer.offsets, data.lengths, settings.compute_dtype, manifest)
        fsync_path(building / f"shard-{rank}.bin")
        accelerator.wait_for_everyone()
        if self.main:
            write_json(building / MANIFEST, manifest)
            fsync_path(building)
            os.rename(building, folder)
        accelerator.wait_for_everyone()
        return None

    def _manifest(self, data: EncodedDataset, key: str, shards: int) -> dict[str, Any]:
        settings = self.settings
        shard_tokens = [int(sum(data.lengths[i] for i in range(shard, len(data), shards))) for shard in range(shards)]
        return {
            "format": FORMAT, "key": key, "rows": len(data), "states": self.cut.states, "hidden": self.encoder.config.hidden_size,
            "dtype": dtype_name(settings.dtype), "compute_dtype": dtype_name(settings.compute_dtype), "shards": shards,
            "shard_tokens": shard_tokens, "bytes": int(sum(shard_tokens) * self.cut.states * self.encoder.config.hidden_size * torch.finfo(settings.dtype).bits // 8),
            "cut": self.cut.layers, "all_states": self.cut.all_states, "encoder": type(self.encoder).__name__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "torch": torch.__version__, "transformers": transformers.__version__,
        }
