"""A trained run, loaded for prediction: ``bert_tasks.load(run_dir).predict([...])``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Union

import torch

from .config import RunConfig
from .data import Split, read_file
from .rundir import load_trained
from .training import eval_loader


class Predictor:
    """Holds the best model of a run; predicts batches sorted by length, answers in input order."""

    def __init__(self, config: RunConfig, assembly: Any) -> None:
        self.config = config
        self.task = assembly.task
        self.model = assembly.model.eval()

    def predict(self, examples: Iterable[Any], batch_size: int = 64) -> list[dict[str, Any]]:
        """Classification: texts, (text, text_pair) tuples or dicts; tagging: token lists or
        whitespace-separated sentences; one answer per example."""
        return self.predict_split(self.task.examples_to_split(examples), batch_size)

    def read_input(self, path: Path) -> Split:
        """A prediction file in any format the run's data could be given in."""
        data = self.config.data
        split = read_file("input", Path(path), tsv_quoting=data.tsv_quoting, conll_columns=data.conll_columns)
        return self.task.prepare_input(split)

    def predict_file(self, path: Path, batch_size: int = 64) -> list[dict[str, Any]]:
        return self.predict_split(self.read_input(path), batch_size)

    def predict_file_to(self, path: Path, out: Path, batch_size: int = 64) -> int:
        """Predict ``path`` and write the answers to ``out`` in the task's output format; returns the count."""
        split = self.read_input(path)
        predictions = self.predict_split(split, batch_size)
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        self.task.write_predictions(split, predictions, Path(out))
        return len(predictions)

    @torch.no_grad()
    def predict_split(self, split: Split, batch_size: int = 64) -> list[dict[str, Any]]:
        data = self.task.encode(split, with_labels=False)
        rows: list = [None] * len(data)
        for batch in eval_loader(data, self.task, batch_size):
            outputs = self.task.predict_step(self.model, batch).numpy()
            for index, row in zip(batch["index"].tolist(), outputs):
                rows[index] = row[: data.lengths[index]] if self.task.outputs_per_token else row
        return self.task.format_predictions(rows, data)


def load(run_dir: Union[str, Path]) -> Predictor:
    """Load the best model of a finished run directory, or a folder written by ``bert-tasks publish``."""
    from .publishing import is_published, load_published

    config, assembly = load_published(Path(run_dir)) if is_published(Path(run_dir)) else load_trained(Path(run_dir))
    return Predictor(config, assembly)
