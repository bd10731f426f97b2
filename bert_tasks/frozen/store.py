"""The frozen-states store: every row's hidden states at the cut, ragged (real tokens only).

On disk a store is one folder, renamed into place only when complete::

    <key>/manifest.json        what the values are, shapes, dtype, shard sizes (read first)
    <key>/shard-R.bin          process R's rows: raw [tokens, states, hidden] values, row after row
    <key>/shard-R.offsets.npy  int64 start token of each of its rows (row i lives in shard i % shards)

Opened within the memory budget it is read into memory; above it, the shards are memory-mapped
and each batch reads only its rows. bfloat16 has no numpy type: its bits are kept as int16.
Nothing here unpickles: offsets load with ``allow_pickle=False``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..errors import BertTasksError
from .inventory import MANIFEST, read_manifest

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# numpy holds each dtype's values as: float32, float16, and bfloat16 bits as int16
NUMPY_OF = {torch.float32: np.float32, torch.float16: np.float16, torch.bfloat16: np.int16}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def to_numpy(values: torch.Tensor) -> np.ndarray:
    """CPU numpy view of a float tensor in its own dtype (bfloat16 as int16 bits)."""
    values = values.detach().cpu().contiguous()
    return values.view(torch.int16).numpy() if values.dtype == torch.bfloat16 else values.numpy()


def from_numpy(values: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(values))
    return tensor.view(torch.bfloat16) if dtype == torch.bfloat16 else tensor


class ShardWriter:
    """Appends rows of one shard to ``shard-R.bin`` (or keeps them in memory when ``folder`` is None)."""

    def __init__(self, folder: Optional[Path], shard: int, rows: int, dtype: torch.dtype) -> None:
        self.folder, self.shard, self.dtype = folder, shard, dtype
        self.offsets = np.full(rows, -1, dtype=np.int64)
        self.tokens = 0
        self.parts: list[torch.Tensor] = []
        self.handle = (folder / f"shard-{shard}.bin").open("wb") if folder is not None else None

    def add(self, local_row: int, states: torch.Tensor) -> None:
        """One row's states. Shape: [tokens, states, hidden]"""
        values = states.to(self.dtype)
        self.offsets[local_row] = self.tokens
        self.tokens += values.shape[0]
        if self.handle is not None:
            self.handle.write(to_numpy(values).tobytes())
        else:
            self.parts.append(values.cpu())

    def finish(self) -> Optional[torch.Tensor]:
        """Close the files (offsets beside the values); in memory: the shard's values. Shape: [tokens, states, hidden]"""
        if (self.offsets < 0).any():
            raise BertTasksError(f"frozen cache shard {self.shard}: {int((self.offsets < 0).sum())} rows were never computed")
        if self.handle is None:
            return torch.cat(self.parts) if self.parts else None
        self.handle.flush()
        self.handle.close()
        np.save(self.folder / f"shard-{self.shard}.offsets.npy", self.offsets)
        return None


class FrozenStore:
    """Read side: ``gather`` gives a batch's states, padded with zeros to the batch's length."""

    def __init__(self, shards: list[Any], offsets: list[np.ndarray], lengths: Sequence[int], dtype: torch.dtype,
                 compute_dtype: torch.dtype, manifest: dict[str, Any], mapped: bool) -> None:
        self.shards, self.offsets, self.lengths = shards, offsets, list(lengths)
        self.dtype, self.compute_dtype, self.manifest, self.mapped = dtype, compute_dtype, manifest, mapped
        self.states, self.hidden = int(manifest["states"]), int(manifest["hidden"])
        self.flat: Optional[torch.Tensor] = None  # set by ``flatten``: every row's values in one device tensor
        self.row_start: Optional[torch.Tensor] = None
        self.row_length: Optional[torch.Tensor] = None

    @classmethod
    def in_memory(cls, values: torch.Tensor, offsets: np.ndarray, lengths: Sequence[int], compute_dtype: torch.dtype, manifest: dict[str, Any]) -> "FrozenStore":
        return cls([values], [offsets], lengths, values.dtype, compute_dtype, manifest, mapped=False)

    @classmethod
    def open(cls, folder: Path, lengths: Sequence[int], memory_budget: int) -> "FrozenStore":
        """A complete store folder; read into memory if it fits ``memory_budget`` bytes, else memory-mapped.
        Damage (a missing or short file, a manifest that does not match) raises BertTasksError."""
        manifest = read_manifest(folder)
        if manifest is None:
            raise BertTasksError(f"{folder}: not a complete frozen cache (no readable {MANIFEST})")
        dtype, compute_dtype = DTYPES[manifest["dtype"]], DTYPES[manifest["compute_dtype"]]
        states, hidden, count = int(manifest["states"]), int(manifest["hidden"]), int(manifest["shards"])
        if manifest["rows"] != len(lengths):
            raise BertTasksError(f"{folder}: holds {manifest['rows']} rows, the data has {len(lengths)}")
        mapped = manifest["bytes"] > memory_budget
        shards, offsets = [], []
        for shard in range(count):
            tokens = int(manifest["shard_tokens"][shard])
            values_path = folder / f"shard-{shard}.bin"
            expected = tokens * states * hidden * torch.finfo(dtype).bits // 8
            if not values_path.is_file() or values_path.stat().st_size != expected:
                raise BertTasksError(f"{values_path}: missing or not {expected} bytes")
            offsets.append(np.load(folder / f"shard-{shard}.offsets.npy", allow_pickle=False))
            if tokens == 0:
                shards.append(torch.zeros((0, states, hidden), dtype=dtype, device="cpu"))
            elif mapped:
                shards.append(np.memmap(values_path, dtype=NUMPY_OF[dtype], mode="r", shape=(tokens, states, hidden)))
            else:
                shards.append(from_numpy(np.fromfile(values_path, dtype=NUMPY_OF[dtype]).reshape(tokens, states, hidden), dtype))
        return cls(shards, offsets, lengths, dtype, compute_dtype, manifest, mapped)

    def place(self, device: torch.device, device_budget: int) -> None:
        """On a GPU: the values on the device when they fit ``device_budget`` bytes, else in pinned host memory."""
        if device.type != "cuda" or self.mapped:
            return
        if self.manifest["bytes"] <= device_budget:
            self.flatten(device)
        else:
            self.shards = [shard.pin_memory() for shard in self.shards]

    def flatten(self, device: torch.device) -> None:
        """All values in one tensor on ``device``, with each row's start and length beside them there too, so
        ``gather`` indexes on the device: no host round trip (a GPU sync) per batch. Shards are copied in one
        by one, so the host never holds a second copy."""
        if self.mapped:
            raise BertTasksError("a memory-mapped frozen cache is read batch by batch; it is not flattened")
        sizes = [int(shard.shape[0]) for shard in self.shards]
        values = torch.empty((max(1, sum(sizes)), self.states, self.hidden), dtype=self.dtype, device=device)  # Shape: [tokens, states, hidden]
        bases = np.cumsum([0, *sizes[:-1]])
        count = len(self.shards)
        for shard, base in zip(self.shards, bases):
            values[base : base + shard.shape[0]].copy_(shard)
        starts = [int(bases[row % count] + self.offsets[row % count][row // count]) for row in range(len(self.lengths))]
        self.flat = values
        self.row_start = torch.tensor(starts, dtype=torch.int64, device=device)  # Shape: [rows]
        self.row_length = torch.tensor(self.lengths, dtype=torch.int64, device=device)  # Shape: [rows]
        self.shards = []

    def gather(self, index: torch.Tensor, pad_to: int, device: torch.device) -> torch.Tensor:
        """States of rows ``index`` in the compute dtype, zero past each row's length.
        Shape: index [batch] -> [batch, pad_to, states, hidden]"""
        out = self._gather_flat(index, pad_to) if self.flat is not None else self._gather_rows(index, pad_to, device)
        return out if self.dtype == self.compute_dtype else out.to(self.compute_dtype)

    def _gather_flat(self, index: torch.Tensor, pad_to: int) -> torch.Tensor:
        """One indexing kernel over the flattened values (see ``flatten``). Shape: [batch, pad_to, states, hidden]"""
        index = index.to(self.flat.device, non_blocking=True)
        positions = torch.arange(pad_to, device=self.flat.device)  # Shape: [pad_to]
        valid = positions[None, :] < self.row_length[index][:, None]  # Shape: [batch, pad_to]
        tokens = (self.row_start[index][:, None] + positions[None, :]) * valid  # padding reads token 0, then zeroed
        return self.flat[tokens].masked_fill_(~valid[:, :, None, None], 0)

    def _gather_rows(self, index: torch.Tensor, pad_to: int, device: torch.device) -> torch.Tensor:
        """Row by row from host shards (in memory or memory-mapped), staged in pinned memory for a GPU."""
        rows = index.tolist()
        source = self.shards[0]
        home = source.device if isinstance(source, torch.Tensor) else torch.device("cpu")
        staged = home.type == "cpu" and device.type == "cuda"  # pinned, so the copy to the GPU can overlap
        out = torch.zeros((len(rows), pad_to, self.states, self.hidden), dtype=self.dtype, device=home, pin_memory=staged)
        count = len(self.shards)
        for position, row in enumerate(rows):
            shard, local = row % count, row // count
            start, length = int(self.offsets[shard][local]), self.lengths[row]
            values = self.shards[shard][start : start + length]
            out[position, :length] = values if isinstance(values, torch.Tensor) else from_numpy(values, self.dtype)
        return out.to(device, non_blocking=staged)
