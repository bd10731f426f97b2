"""Streamed training data (``data.streaming: true``): rows read, encoded and batched as training consumes
them and never stored, for pretraining corpora bigger than memory or disk.

The training source is read ``CHUNK_ROWS`` rows (a .txt corpus: ``CHUNK_DOCUMENTS`` documents) at a time:
a csv / tsv / jsonl / .txt file line by line, or a Hub data set with ``streaming=True``. Each chunk is
encoded by the task (whole documents per chunk, as in the Arrow stores), its rows join a buffer of
``batch_size x GROUP`` rows, and a full buffer is shuffled, sorted by length, cut into batches and
those shuffled, all seeded by (train.seed, pass): the same batches on every run. Only full batches
train (the last rows of a pass that do not fill one are dropped). A row's number within its pass is its
``index``, so pretraining masks drawn from (seed, pass, row) are the same on resume.

The length of a stream is unknown, so ``train.max_steps`` sets the training length (and the learning
rate schedule); a pass ending is an "epoch" (an evaluation when ``train.eval_every=epoch``). With
several processes the main process reads the stream and Accelerate hands each process its share of
every batch. A resumed run reads the stream again up to where it stopped.
"""
from __future__ import annotations

import random
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import datasets
from torch.utils.data import IterableDataset

from .data import DEMO_DATASET, DEMO_DIR, STREAMED_SUFFIXES, PLAIN_TEXT_COLUMN, PLAIN_TEXT_SUFFIX, ROW_RANGE, Split, read_file_in_chunks
from .errors import ConfigError, DataError

CHUNK_ROWS = 2_000  # table rows read and encoded at a time
CHUNK_DOCUMENTS = 500  # .txt documents read and encoded at a time
GROUP = 64  # batches per shuffled, length-sorted buffer


def stream_chunks(config: Any, plain_text: bool, chunk_rows: int) -> Callable[[], Iterator[Split]]:
    """A function giving the training source's chunks from the start (called once per pass)."""
    data, limit = config.data, config.train.max_train_samples
    source = data.train
    path = DEMO_DIR / f"{source}.csv" if data.dataset == DEMO_DATASET and not Path(source).suffix else Path(source)
    if ROW_RANGE.match(source):
        raise ConfigError(f"data.train={source!r}: a row range cannot be streamed; use train.max_train_samples for the first N rows")
    if path.suffix.lower() in STREAMED_SUFFIXES and path.is_file():
        return lambda: _limited(read_file_in_chunks("train", path, chunk_rows, data.tsv_quoting), limit)
    if path.suffix.lower() == PLAIN_TEXT_SUFFIX and path.is_file() and plain_text:
        return lambda: _limited(_text_documents(path, CHUNK_DOCUMENTS), limit)
    if path.exists() or path.suffix:
        raise ConfigError(f"data.train={source!r}: data.streaming reads csv, tsv, jsonl or .txt files and Hub data sets; "
                          f"for other files use data.storage=arrow")
    if data.dataset is None:
        raise DataError(f"data.train={source!r}: no such file, and no data.dataset is set to stream a Hub split from")
    return lambda: _limited(_hub_chunks(data.dataset, data.dataset_config, source, chunk_rows), limit)


def _limited(chunks: Iterator[Split], limit: Optional[int]) -> Iterator[Split]:
    """The first ``limit`` rows (train.max_train_samples) of a stream of chunks."""
    left = limit
    for chunk in chunks:
        if left is not None and len(chunk) >= left:
            yield chunk.head(left)
            return
        if left is not None:
            left -= len(chunk)
        yield chunk


def _text_documents(path: Path, per_chunk: int) -> Iterator[Split]:
    """A .txt corpus (a sentence per line, blank lines between documents) as Splits of whole documents,
    read line by line: a row per document, as read_file gives it."""
    texts: list[str] = []
    lines: list[int] = []
    current: list[str] = []
    number = 0
    try:
        with path.open(encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, start=1):
                sentence = line.strip()
                if sentence:
                    if not current:
                        lines.append(number)
                    current.append(sentence)
                    continue
                if current:
                    texts.append("\n".join(current))
                    current = []
                if len(texts) == per_chunk:
                    yield Split("train", datasets.Dataset.from_dict({PLAIN_TEXT_COLUMN: texts}), str(path), lines, "txt")
                    texts, lines = [], []
    except UnicodeDecodeError:
        raise DataError(f"{path}, after line {number}: not UTF-8 text; re-save the file as UTF-8") from None
    if current:
        texts.append("\n".join(current))
    if texts:
        yield Split("train", datasets.Dataset.from_dict({PLAIN_TEXT_COLUMN: texts}), str(path), lines, "txt")
    elif not lines:
        raise DataError(f"{path}: no text (expected one sentence per line, a blank line between documents)")


def _hub_chunks(dataset: str, config: Optional[str], split: str, chunk_rows: int) -> Iterator[Split]:
    label = f"hub {dataset}{'/' + config if config else ''} [{split}] (streamed)"
    try:
        rows = iter(datasets.load_dataset(dataset, config, split=split, streaming=True))
        first = list(islice(rows, chunk_rows))
    except Exception as error:  # datasets raises many types (ConnectionError, DatasetNotFoundError, ValueError)
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"data.train: cannot stream {label}: {message[:200]} (offline? give a local file with data.train=PATH)") from None
    start, chunk = 0, first
    while chunk:
        lines = list(range(start + 1, start + len(chunk) + 1))
        yield Split("train", datasets.Dataset.from_list(chunk), label, lines, row_label="row")
        start += len(chunk)
        chunk = list(islice(rows, chunk_rows))


class StreamedBatches(IterableDataset):
    """The rows of one pass over the stream, batch after batch (``batch_size`` rows each); also what the training loop asks of its
    sampler (``use_epoch``, ``len``, ``rows_in_batch``, ``real_rows``)."""

    def __init__(self, chunks: Callable[[], Iterator[Split]], task: Any, batch_size: int, seed: int, steps: int, accumulation: int) -> None:
        self.chunks, self.task, self.batch_size, self.seed = chunks, task, batch_size, seed
        self.steps, self.accumulation = steps, accumulation
        self.epoch = 0
        self.meta: dict[str, Any] = {}

    # -- the sampler's part ---------------------------------------------------------------------
    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        """Micro-batches of the whole training (a stream's own length is unknown)."""
        return self.steps * self.accumulation

    def rows_in_batch(self, number: int) -> int:
        return self.batch_size

    def real_rows(self, number: int, process: int, processes: int) -> Optional[int]:
        return None  # every batch is full

    # -- the data -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        span = self.batch_size * GROUP
        buffer: list[dict[str, Any]] = []
        position, number = 0, 0
        for chunk in self.chunks():
            encoded = self.task.encode(chunk)
            for row in range(len(encoded)):
                buffer.append({**encoded[row], "index": position})
                position += 1
            while len(buffer) >= span:
                yield from self._batches(buffer[:span], number)
                buffer, number = buffer[span:], number + 1
        if position == 0:
            raise DataError("data.train: the stream has no rows")
        yield from self._batches(buffer, number)

    def _batches(self, rows: list[dict[str, Any]], number: int) -> Iterator[dict[str, Any]]:
        generator = random.Random(f"{self.seed}-{self.epoch}-{number}")
        generator.shuffle(rows)
        rows.sort(key=lambda r: len(r["input_ids"]), reverse=True)
        batches = [rows[i : i + self.batch_size] for i in range(0, len(rows) - self.batch_size + 1, self.batch_size)]
        generator.shuffle(batches)
        for batch in batches:  # row by row: the DataLoader cuts them into these same batches and collates them
            yield from batch


def check_streaming(config: Any, task: Any) -> None:
    """data.streaming's requirements, before any data is read."""
    if not config.data.streaming:
        return
    if not task.streamable_training:
        raise ConfigError(f"data.streaming=true: task {config.task.name!r} learns from the whole training split before training "
                          "(e.g. its labels); only pretraining (mlm) streams. Use data.storage=arrow for big data")
    if config.train.max_steps is None:
        raise ConfigError("data.streaming=true: a stream's length is unknown; set train.max_steps (the training length and its schedule)")
    if config.train.cache_frozen is True:
        raise ConfigError("data.streaming=true and train.cache_frozen=true: streamed rows are not stored, so no frozen outputs can be; choose one")


def training_stream(config: Any, task: Any) -> StreamedBatches:
    plain_text = type(task).plain_text_files
    chunks = stream_chunks(config, plain_text, task.encode_chunk_rows(CHUNK_ROWS))
    tc = config.train
    return StreamedBatches(chunks, task, tc.batch_size, tc.seed, tc.max_steps, tc.gradient_accumulation_steps)


def first_chunk(chunks: Callable[[], Iterator[Split]]) -> Split:
    """The stream's first chunk: what the task is fitted and checked on."""
    for chunk in chunks():
        return chunk
    raise DataError("data.train: the stream has no rows")
