"""A trained run, loaded for prediction: ``bert_tasks.load(run_dir).predict([...])``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence, Union

import datasets
import numpy as np
import torch

from .config import RunConfig
from .data import Split, read_file
from .errors import BertTasksError
from .rundir import load_trained
from .training import eval_loader

TextOrPair = Union[str, Sequence[str], dict]


class Predictor:
    """Holds the best model of a run; predicts batches sorted by length, in input order."""

    def __init__(self, config: RunConfig, assembly: Any) -> None:
        self.config = config
        self.task = assembly.task
        self.model = assembly.model.eval()

    @property
    def _columns(self) -> tuple[str, Any]:
        return self.config.data.text_column, self.config.data.text_pair_column

    def predict(self, examples: Iterable[TextOrPair], batch_size: int = 64) -> list[dict[str, Any]]:
        """Texts, (text, pair) tuples, or dicts with the run's text column names."""
        text_column, pair_column = self._columns
        rows: dict[str, list] = {text_column: []}
        if pair_column:
            rows[pair_column] = []
        for number, example in enumerate(examples, start=1):
            if isinstance(example, dict):
                rows[text_column].append(example.get(text_column))
                if pair_column:
                    rows[pair_column].append(example.get(pair_column))
            elif isinstance(example, str):
                if pair_column:
                    raise BertTasksError(f"example {number}: this model reads sentence pairs; pass (text, text_pair)")
                rows[text_column].append(example)
            else:
                parts = list(example)
                if len(parts) != (2 if pair_column else 1):
                    raise BertTasksError(f"example {number}: expected {'a (text, text_pair) pair' if pair_column else 'one text'}, got {len(parts)} parts")
                rows[text_column].append(parts[0])
                if pair_column:
                    rows[pair_column].append(parts[1])
        return self.predict_split(Split("input", datasets.Dataset.from_dict(rows), "input"), batch_size)

    def predict_file(self, path: Path, batch_size: int = 64) -> list[dict[str, Any]]:
        """Rows of a csv/tsv/json/jsonl/parquet file; columns named as in training, or 'text'/'text_pair'."""
        split = read_file("input", Path(path), tsv_quoting=self.config.data.tsv_quoting)
        text_column, pair_column = self._columns
        present = split.dataset.column_names
        renames = {}
        if text_column not in present and "text" in present:
            renames["text"] = text_column
        if pair_column and pair_column not in present and "text_pair" in present:
            renames["text_pair"] = pair_column
        if renames:
            split.dataset = split.dataset.rename_columns(renames)
        return self.predict_split(split, batch_size)

    @torch.no_grad()
    def predict_split(self, split: Split, batch_size: int = 64) -> list[dict[str, Any]]:
        data = self.task.encode(split, with_labels=False)
        outputs = np.empty(len(data), dtype=object)
        for batch in eval_loader(data, self.task, batch_size):
            logits = self.model(**batch["inputs"]).float().numpy()
            for index, row in zip(batch["index"].tolist(), logits):
                outputs[index] = row
        return self.task.format_predictions(np.stack(list(outputs)))


def load(run_dir: Union[str, Path]) -> Predictor:
    """Load the best model of a finished run directory."""
    config, assembly = load_trained(Path(run_dir))
    return Predictor(config, assembly)
