"""Tokenised examples in memory, dynamic padding and length-grouped batches."""
from __future__ import annotations

import math
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

IGNORE_INDEX = -100  # label of positions the loss skips (padding, special tokens, continuation pieces)


class EncodedDataset(Dataset):
    """Columns of equal length (lists of token ids, labels); item i is a dict with its 'index'."""

    def __init__(self, columns: dict[str, Sequence[Any]], length_column: str = "input_ids", meta: Optional[dict[str, Any]] = None) -> None:
        sizes = {name: len(values) for name, values in columns.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"columns differ in length: {sizes}")
        self.columns = columns
        self.lengths = [len(ids) for ids in columns[length_column]]
        self.meta = meta or {}  # what the task needs to map rows back to examples (not batched)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = {name: values[index] for name, values in self.columns.items()}
        item["index"] = index
        return item


def pad_sequences(sequences: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """Right-pad to the longest sequence. Shape: [batch, longest]."""
    longest = max(len(s) for s in sequences)
    out = torch.full((len(sequences), longest), value, dtype=torch.long)
    for row, seq in enumerate(sequences):
        out[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return out


def pad_stack(rows: Sequence[np.ndarray], value: float) -> np.ndarray:
    """Stack arrays that may differ in their first dimension, padding with ``value``.
    Shape: [rows, longest, ...] (or [rows, ...] when all rows have the same shape)."""
    shapes = {row.shape for row in rows}
    if len(shapes) == 1:
        return np.stack(rows)
    longest = max(row.shape[0] for row in rows)
    out = np.full((len(rows), longest, *rows[0].shape[1:]), value, dtype=rows[0].dtype)
    for i, row in enumerate(rows):
        out[i, : row.shape[0]] = row
    return out


class LengthGroupedBatches(Sampler[list[int]]):
    """Batches of indices; each batch holds examples of similar length.

    Training: shuffle (seeded by ``seed`` and the epoch, so every process draws the
    same order), cut into mega-batches of ``group`` batches, sort each by length,
    cut into batches and shuffle the batch order. Evaluation (``shuffle=False``):
    sort everything by length. Less padding means less compute: on CPU this is the
    main speed lever for short GLUE sentences.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        group_by_length: bool = True,
        group: int = 64,
    ) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.group_by_length = group_by_length
        self.group = group
        self.epoch = 0

    def use_epoch(self, epoch: int) -> None:
        """Set the epoch that seeds the shuffle. Deliberately not named ``set_epoch``: Accelerate
        calls that with its own count of loader iterations, which is wrong after a resume."""
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def batches(self) -> list[list[int]]:
        count = len(self.lengths)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(count, generator=generator).tolist()
        else:
            order = list(range(count))
        if not self.group_by_length:
            return [order[i : i + self.batch_size] for i in range(0, count, self.batch_size)]
        if not self.shuffle:
            order.sort(key=lambda i: self.lengths[i], reverse=True)
            return [order[i : i + self.batch_size] for i in range(0, count, self.batch_size)]
        span = self.batch_size * self.group
        batches = []
        for start in range(0, count, span):
            mega = sorted(order[start : start + span], key=lambda i: self.lengths[i], reverse=True)
            batches.extend(mega[i : i + self.batch_size] for i in range(0, len(mega), self.batch_size))
        # Keep the one short final batch last (so even multi-process splitting only pads at the end).
        full = [b for b in batches if len(b) == self.batch_size]
        short = [b for b in batches if len(b) < self.batch_size]
        shuffle = torch.randperm(len(full), generator=generator).tolist()
        return [full[i] for i in shuffle] + short

    def rows_in_batch(self, number: int) -> int:
        """Rows of batch ``number`` of an epoch: only the last one may be short."""
        short = len(self.lengths) % self.batch_size
        return short if short and number == len(self) - 1 else self.batch_size

    def real_rows(self, number: int, process: int, processes: int) -> Optional[int]:
        """How many leading rows of this process's share of batch ``number`` are real; None: all.

        Accelerate (split_batches with even_batches) tops a short last batch up with rows of
        the epoch's first batch so every process gets an equal share. Those copies must not
        count, or N processes would train on other data than one process does.
        """
        rows = self.rows_in_batch(number)
        if rows == self.batch_size:
            return None
        share = self.batch_size // processes
        return min(share, max(0, rows - share * process))

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())


def collate_tokens(features: list[dict[str, Any]], pad_token_id: int, extra: Optional[dict[str, torch.Tensor]] = None) -> dict[str, Any]:
    """Pad the tokenizer's columns of a batch; 'labels' and 'index' travel beside 'inputs'."""
    inputs = {"input_ids": pad_sequences([f["input_ids"] for f in features], pad_token_id)}
    for name in ("attention_mask", "token_type_ids"):
        if name in features[0]:
            inputs[name] = pad_sequences([f[name] for f in features], 0)
    batch: dict[str, Any] = {"inputs": inputs, "index": torch.tensor([f["index"] for f in features])}
    if extra:
        batch.update(extra)
    return batch
