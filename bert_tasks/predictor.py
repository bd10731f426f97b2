"""A trained run, loaded for prediction: ``bert_tasks.load(run_dir).predict([...])``."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

import torch

from .atomic_files import replacing
from .data import STREAMED_SUFFIXES, Split, read_file, read_file_in_chunks
from .devices import model_device, move_to, pins_batches, resolve_device
from .errors import ConfigError, DataError
from .precision import PRECISIONS, PrecisionChoice, choose_precision
from .model import TaskModel
from .rundir import SavedModel, open_run
from .text_files import check_is_file
from .training import eval_loader

# Prediction column options: the run's data key each one maps an input column onto.
CHUNK_ROWS = 8192  # rows read, predicted and written at a time; batches are sorted by length within a chunk
COLUMN_OPTIONS = {"text_column": "--text-column", "text_pair_column": "--text-pair-column"}


class Predictor:
    """Holds the best model of a run on one device; predicts batches sorted by length, answers in input order.

    The weights load on first use (``model``), after the input is read, checked and encoded: a bad
    input file fails in a second, before a large model is built."""

    def __init__(self, saved: SavedModel, device: Union[str, torch.device] = "auto", precision: str = "no") -> None:
        self.config = saved.config
        self.task = saved.task
        self._saved = saved
        self._target = resolve_device(device) if isinstance(device, str) else device
        self.precision = inference_precision(precision, self._target)
        self._model: Optional[TaskModel] = None

    @property
    def model(self) -> TaskModel:
        """The trained model on the chosen device, loaded the first time it is asked for."""
        if self._model is None:
            self._model = self._saved.load_model().model.to(self._target).eval()
        return self._model

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    def predict(self, examples: Iterable[Any], batch_size: int = 64) -> list[dict[str, Any]]:
        """Classification: texts, (text, text_pair) tuples or dicts; tagging: token lists or
        whitespace-separated sentences; one answer per example."""
        return self.predict_split(self.task.examples_to_split(examples), batch_size)

    def read_input(self, path: Path, columns: Optional[Mapping[str, str]] = None) -> Split:
        """A prediction file in any format the run's data could be given in. ``columns`` maps a run
        data key ('text_column', 'text_pair_column') to the input's own column name for it."""
        data = self.config.data
        split = read_file("input", Path(path), tsv_quoting=data.tsv_quoting, conll_columns=data.conll_columns, plain_text=self.task.plain_text_files)
        split = map_columns(split, columns or {}, self.task)
        return self.task.prepare_input(split)

    def predict_file(self, path: Path, batch_size: int = 64, columns: Optional[Mapping[str, str]] = None) -> list[dict[str, Any]]:
        return self.predict_split(self.read_input(path, columns), batch_size)

    def predict_file_to(self, path: Path, out: Path, batch_size: int = 64, columns: Optional[Mapping[str, str]] = None,
                        chunk_rows: int = CHUNK_ROWS) -> int:
        """Predict ``path`` and write the answers to ``out`` in the task's output format; returns the count.
        ``out`` is written atomically and may never be the input itself. csv / tsv / jsonl input is read,
        predicted and written ``chunk_rows`` rows at a time (memory stays flat on a file of any length,
        answers keep the input's order); other formats are read whole."""
        check_prediction_paths(Path(path), Path(out))
        if Path(path).suffix.lower() in STREAMED_SUFFIXES:
            return self._predict_chunks_to(Path(path), Path(out), batch_size, columns, chunk_rows)
        split = self.read_input(path, columns)
        predictions = self.predict_split(split, batch_size)
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        self.task.write_predictions(split, predictions, Path(out))
        return len(predictions)

    def _predict_chunks_to(self, path: Path, out: Path, batch_size: int, columns: Optional[Mapping[str, str]], chunk_rows: int) -> int:
        check_batch_size(batch_size)
        check_batch_size(chunk_rows, "chunk_rows")
        count = 0
        out.parent.mkdir(parents=True, exist_ok=True)
        with replacing(out) as temporary, temporary.open("w", encoding="utf-8") as handle:
            for chunk in read_file_in_chunks("input", path, chunk_rows, tsv_quoting=self.config.data.tsv_quoting):
                for row in self.predict_split(self.task.prepare_input(map_columns(chunk, columns or {}, self.task)), batch_size):
                    handle.write(json.dumps(row) + "\n")  # the layout Task.write_predictions gives these formats
                    count += 1
        return count

    @torch.inference_mode()
    def predict_split(self, split: Split, batch_size: int = 64) -> list[dict[str, Any]]:
        check_batch_size(batch_size)
        data = self.task.encode(split, with_labels=False)  # bad rows fail here, before the weights load
        device = self.device
        rows: list = [None] * len(data)
        dtype = AUTOCAST_DTYPES.get(self.precision.precision)
        for batch in eval_loader(data, self.task, batch_size, pin_memory=pins_batches(device)):  # batches of similar length; answers go back in input order
            rows_of_batch = batch["index"].tolist()  # read on the host, before the copy
            batch = move_to(batch, device)  # every tensor where the weights are
            with torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext():
                outputs = self.task.predict_step(self.model, batch).float().cpu().numpy()  # Shape: [batch, ...]
            for index, row in zip(rows_of_batch, outputs):
                rows[index] = row[: data.lengths[index]] if self.task.outputs_per_token else row
        return self.task.format_predictions(rows, data)


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def inference_precision(precision: str, device: torch.device) -> PrecisionChoice:
    """``--precision`` for prediction: no (fp32, the default: exact), bf16, fp16, or auto (as training's auto)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision={precision}: expected one of {', '.join(PRECISIONS)}")
    return choose_precision(precision, device.type)


def check_batch_size(batch_size: int, option: str = "--batch-size") -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"{option}={batch_size}: must be 1 or more")


def check_prediction_paths(source: Path, out: Path) -> None:
    """The input must be a file; the output must not be the input (by any path), nor a folder."""
    check_is_file(source, "--input")
    if out.is_dir():
        raise DataError(f"--output={str(out)!r}: is a folder, expected a file name")
    same = out.resolve() == source.resolve() or (out.exists() and os.path.samefile(out, source))
    if same:
        raise DataError(f"--output={str(out)!r}: is the input file {str(source)!r}; predictions never overwrite their input, give another name")


def map_columns(split: Split, columns: Mapping[str, str], task: Any) -> Split:
    """Rename the input's columns onto the run's: {'text_column': 'review'} makes 'review' the run's text column."""
    present = split.dataset.column_names
    renames: dict[str, str] = {}
    for key, given in columns.items():
        option = COLUMN_OPTIONS.get(key, key)
        target = task.input_column(key)
        if target is None:
            raise ConfigError(f"{option}={given}: this run reads no data.{key} (it was trained without one)")
        if given not in present:
            raise DataError(f"{split.origin}: no column {given!r} (given by {option}); the columns are {', '.join(present)}")
        if given != target:
            renames[given] = target
    if len(set(renames.values())) != len(renames):
        raise ConfigError(f"{', '.join(COLUMN_OPTIONS.get(k, k) for k in columns)}: two options name the same run column")
    clashes = [target for target in renames.values() if target in present and target not in renames]
    dataset = split.dataset.remove_columns(clashes) if clashes else split.dataset  # the named column wins over a same-named one
    split.dataset = dataset.rename_columns(renames) if renames else dataset
    return split


def load(run_dir: Union[str, Path], device: Union[str, torch.device] = "auto", precision: str = "no") -> Predictor:
    """The best model of a finished run directory, or of a folder written by ``bert-tasks publish``,
    for ``device`` ('auto': a GPU when there is one) in ``precision`` (no = fp32, bf16, fp16, or auto:
    what the device runs natively). Its config, tokenizer and task load now; the weights on first use
    (see ``Predictor``)."""
    from .publishing import is_published, open_published

    if isinstance(device, str):
        device = resolve_device(device)  # a bad --device fails before anything loads
    saved = open_published(Path(run_dir)) if is_published(Path(run_dir)) else open_run(Path(run_dir))
    return Predictor(saved, device, precision)
