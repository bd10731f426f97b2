"""Training data larger than memory: the raw rows and the encoded rows in memory-mapped Arrow files
(``datasets``), cached under a fingerprint so a second run of the same recipe neither re-reads nor
re-tokenises.

Why: encoded rows held as Python lists cost ~40 bytes a token, so a corpus of a few million sentences
fills the RAM before training starts. In Arrow files the operating system pages rows in as batches
need them, and the process's peak stays about flat as the data grows.

``data.storage``: ``memory`` (rows as Python lists, as always), ``arrow``, or ``auto`` (arrow for a
training file of at least ``AUTO_BYTES`` or a training split of at least ``AUTO_ROWS`` rows). Only
the training split is stored this way; evaluation sets stay in memory (their task metadata, e.g. QA
offsets, is needed whole to score them). A csv / tsv / jsonl training file is read a chunk at a time
into Arrow (checked as ``read_file`` checks it); every other source (Hub, parquet, json, CoNLL) is
already read by ``datasets``. The split is then encoded ``CHUNK_ROWS`` rows at a time, in
``data.num_proc`` processes, by the task's own ``encode``: the same rows as in memory, except for
pretraining, whose documents are packed and paired within a chunk (``Task.encode_chunk_rows``).

A store is written into a folder of its own (``.partial-<pid>-...``) and renamed into place when
complete: a kill leaves no store that looks whole, and the next run builds it again. Concurrent
processes (``accelerate launch``) may build the same store; the first rename wins and the others
remove only their own folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from . import __version__
from .batching import EncodedDataset
from .data import STREAMED_SUFFIXES, ROW_RANGE, Split, read_file_in_chunks
from .errors import DataError
from .arrow_inventory import PARTIAL, remove_dead_builds, store_root

AUTO_BYTES = 8 * 2**20  # data.storage=auto: a csv/tsv/jsonl training file this big goes to Arrow (~80,000 SST-2 rows)
AUTO_ROWS = 100_000  # ... and so does any other training split with this many rows
CHUNK_ROWS = 10_000  # rows read, checked and encoded at a time
STORE_FORMAT = 1  # bump when what a store holds changes
STORAGE_KEYS = ("storage", "cache_dir", "num_proc")  # data keys that do not change the encoded rows


def streamable_file(source: str) -> Optional[Path]:
    """The path of a training source that can be read a chunk at a time (csv / tsv / jsonl, no row range)."""
    path = Path(source)
    if ROW_RANGE.match(source) or path.suffix.lower() not in STREAMED_SUFFIXES or not path.is_file():
        return None
    return path


def wants_arrow(storage: str, source_bytes: Optional[int] = None, rows: Optional[int] = None) -> bool:
    """``data.storage`` for a source of this size (bytes of a streamable file, or rows when known)."""
    if storage != "auto":
        return storage == "arrow"
    return (source_bytes is not None and source_bytes >= AUTO_BYTES) or (rows is not None and rows >= AUTO_ROWS)


# ---- raw rows -------------------------------------------------------------------------------------

def read_file_to_arrow(name: str, path: Path, tsv_quoting: bool, root: Path) -> Split:
    """A csv / tsv / jsonl file as a memory-mapped Split, converted once per file version."""
    stat = path.stat()
    key = _digest({"format": STORE_FORMAT, "kind": "raw", "path": str(path.resolve()), "size": stat.st_size,
                   "mtime_ns": stat.st_mtime_ns, "tsv_quoting": tsv_quoting, "datasets": datasets.__version__})
    folder = root / f"raw-{key}"
    if not (folder / "store.json").is_file():
        _build(folder, lambda partial: _write_raw(name, path, tsv_quoting, partial))
    info = json.loads((folder / "store.json").read_text())
    data = datasets.Dataset.from_file(str(folder / "rows.arrow"))
    lines = np.load(folder / "lines.npy")  # 8 bytes a row, in memory: worker processes get a copy
    return Split(name, data, str(path), lines, info["format"], row_label=info["row_label"])


def _write_raw(name: str, path: Path, tsv_quoting: bool, partial: Path) -> dict[str, Any]:
    schema: Optional[pa.Schema] = None
    lines: list[np.ndarray] = []
    row_format, row_label = "", "line"
    with pa.OSFile(str(partial / "rows.arrow"), "wb") as sink:
        writer: Optional[pa.RecordBatchStreamWriter] = None
        for chunk in read_file_in_chunks(name, path, CHUNK_ROWS, tsv_quoting):
            table = chunk.dataset.data.table
            if schema is None:
                schema, row_format, row_label = table.schema, chunk.format, chunk.row_label
                writer = pa.ipc.new_stream(sink, schema)
            table = _conform(table, schema, chunk)
            writer.write_table(table)
            lines.append(np.asarray(chunk.lines, dtype=np.int64))
        if writer is not None:
            writer.close()
    np.save(partial / "lines.npy", np.concatenate(lines))
    return {"format": row_format, "row_label": row_label}


def _conform(table: pa.Table, schema: pa.Schema, chunk: Split) -> pa.Table:
    """A later chunk's columns in the first chunk's types. Only a column that is empty (null) in this chunk
    may take the earlier type; any other difference is what read_file refuses within one file."""
    if table.schema.equals(schema):
        return table
    differ = [f.name for f in schema if table.schema.field(f.name).type != f.type and table.schema.field(f.name).type != pa.null()]
    if differ:
        kinds = ", ".join(f"{n!r}: {table.schema.field(n).type} here, {schema.field(n).type} before" for n in differ)
        raise DataError(f"{chunk.where(0)} onwards: field(s) {differ} hold another kind of value than in the rows before ({kinds}); a column holds one kind of value")
    return table.select(schema.names).cast(schema)


# ---- encoded rows ---------------------------------------------------------------------------------

class ArrowEncodedDataset(EncodedDataset):
    """EncodedDataset's interface over a memory-mapped ``datasets.Dataset`` of encoded rows."""

    def __init__(self, data: datasets.Dataset, lengths: np.ndarray, folder: Path, reused: bool) -> None:
        self.data, self.lengths, self.folder, self.reused = data, lengths, folder, reused
        self.meta: dict[str, Any] = {}  # training never reads task metadata
        self.columns = _LazyColumns(data)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.data[int(index)]
        item["index"] = int(index)
        return item

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """A whole batch in one Arrow read (the DataLoader asks for batches this way)."""
        indices = [int(i) for i in indices]
        columns = self.data[indices]
        return [{**{name: values[k] for name, values in columns.items()}, "index": index} for k, index in enumerate(indices)]


class _LazyColumns(Mapping[str, Sequence[Any]]):
    """``data.columns[name]`` reads the column only when asked."""

    def __init__(self, data: datasets.Dataset) -> None:
        self.data = data

    def __getitem__(self, name: str) -> Sequence[Any]:
        if name not in self.data.column_names:
            raise KeyError(name)
        return self.data[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data.column_names)

    def __len__(self) -> int:
        return len(self.data.column_names)


def encode_to_arrow(task: Any, split: Split, root: Path, num_proc: Optional[int] = None) -> ArrowEncodedDataset:
    """``task.encode(split)``'s columns in a memory-mapped store, built once per (rows, task, tokenizer)."""
    chunk_rows = task.encode_chunk_rows(CHUNK_ROWS)
    key = _digest({"format": STORE_FORMAT, "kind": "encoded", "bert_tasks": __version__, "datasets": datasets.__version__,
                   "task": type(task).__name__, "task_config": _plain(task.config), "state": task.state_dict(),
                   "data": {k: v for k, v in _plain(task.data).items() if k not in STORAGE_KEYS}, "tokenizer": tokenizer_fingerprint(task.tokenizer),
                   "rows": rows_fingerprint(split), "chunk_rows": chunk_rows})
    folder = root / f"encoded-{key}"
    reused = (folder / "store.json").is_file()
    if not reused:
        _build(folder, lambda partial: _write_encoded(task, split, partial, chunk_rows, num_proc))
    info = json.loads((folder / "store.json").read_text())
    data = datasets.concatenate_datasets([datasets.Dataset.from_file(str(folder / name)) for name in info["files"]])
    return ArrowEncodedDataset(data, np.load(folder / "lengths.npy", mmap_mode="r"), folder, reused)


def _write_encoded(task: Any, split: Split, partial: Path, chunk_rows: int, num_proc: Optional[int]) -> dict[str, Any]:
    starts = list(range(0, len(split), chunk_rows))
    processes = max(1, min(num_proc or 1, len(starts)))
    if processes > 1:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # forked workers: the tokenizer's own threads would deadlock

    def encode_chunk(batch: dict[str, list]) -> dict[str, list]:
        start = batch["start"][0]
        encoded = task.encode(split.rows(start, min(start + chunk_rows, len(split))))
        return {name: _compact(values) for name, values in encoded.columns.items()}

    index = datasets.Dataset.from_dict({"start": starts})
    with _quiet_datasets():
        out = index.map(encode_chunk, batched=True, batch_size=1, remove_columns=["start"], num_proc=processes if processes > 1 else None,
                        cache_file_name=str(partial / "rows.arrow"), new_fingerprint=partial.name.rsplit("-", 1)[-1][:40], desc="encoding")
    files = [Path(f["filename"]).name for f in out.cache_files]
    lengths = pc.list_value_length(out.data.column("input_ids")).to_numpy(zero_copy_only=False).astype(np.int32)
    np.save(partial / "lengths.npy", lengths)
    return {"files": files, "rows": len(out), "tokens": int(lengths.sum())}


def _compact(values: Sequence[Any]) -> Sequence[Any]:
    """Lists of token ids as int32 arrays: half the bytes of Arrow's default int64."""
    first = values[0] if len(values) else None
    if isinstance(first, list) and first and all(isinstance(v, int) for v in first[:8]):
        return [np.asarray(v, dtype=np.int32) for v in values]
    return values


def rows_fingerprint(split: Split) -> str:
    """A digest of the split's rows (their values, not where they came from)."""
    digest = hashlib.sha256(str(split.dataset.features).encode())
    table = split.dataset.with_format("arrow")
    for start in range(0, len(split), CHUNK_ROWS):
        batch = table[start : start + CHUNK_ROWS]
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_table(batch)
        digest.update(sink.getvalue())
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A digest of what the tokenizer does: its full serialised form when fast, else its vocabulary and settings."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    settings = {"class": type(tokenizer).__name__, "max": tokenizer.model_max_length, "special": str(tokenizer.special_tokens_map)}
    return _digest({"tokenizer": hashlib.sha256(text.encode()).hexdigest(), **settings})


# ---- shared ---------------------------------------------------------------------------------------

def _build(folder: Path, write: Any) -> None:
    """Write a store into a partial folder of this process, then rename it into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_builds(folder.parent)
    partial = folder.parent / f"{PARTIAL}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}-{folder.name}"
    partial.mkdir()
    try:
        info = write(partial)
        (partial / "store.json").write_text(json.dumps({**info, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}))
        try:
            partial.rename(folder)
        except OSError:  # another process finished the same store first
            if not (folder / "store.json").is_file():
                raise
            shutil.rmtree(partial, ignore_errors=True)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


class _quiet_datasets:
    """No progress bars from datasets' map (our own progress line says what happens)."""

    def __enter__(self) -> None:
        self.was = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()

    def __exit__(self, *exc: Any) -> None:
        if self.was:
            datasets.enable_progress_bars()


def _plain(value: Any) -> Any:
    from dataclasses import asdict, is_dataclass

    return asdict(value) if is_dataclass(value) else value


def _digest(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def arrow_for_split(storage: str, split: Split) -> bool:
    """Whether ``data.storage`` puts this training split's encoded rows in Arrow."""
    path = streamable_file(split.origin)
    return wants_arrow(storage, path.stat().st_size if path is not None else None, len(split))


def encode_training_split(task: Any, split: Split, data: Any) -> Union[EncodedDataset, ArrowEncodedDataset]:
    """The training split encoded in memory, or in an Arrow store later runs on the same rows reuse
    (``data``: the run's DataConfig)."""
    if not arrow_for_split(data.storage, split):
        return task.encode(split)
    started = time.perf_counter()
    encoded = encode_to_arrow(task, split, store_root(data.cache_dir), data.num_proc)
    how = "reused, not tokenised again" if encoded.reused else f"built in {time.perf_counter() - started:.1f} s"
    print(f"bert-tasks: training data: {len(encoded):,} rows in Arrow store {encoded.folder} ({how})", file=sys.stderr, flush=True)
    return encoded
