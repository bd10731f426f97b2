"""bert_tasks' metrics as `evaluate` modules that load offline from the installed package.

``evaluate.load(bert_tasks.evaluate_metrics.metric_path("glue"), "mrpc")`` (or ``load("glue", "mrpc")``
here) gives an ``EvaluationModule`` with ``add_batch`` / ``add`` / ``compute`` whose numbers are the
ones bert_tasks reports in training, ``evaluate`` and ``suite``: each module's script only adapts
``evaluate``'s inputs to the functions in ``bert_tasks.metrics``, ``squad_scoring`` and
``generation_metrics``. The Hub's modules of similar names need a download and name some results
differently (``matthews_correlation``, ``spearmanr``); these keep bert_tasks' names.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..errors import ConfigError

NAMES = ("glue", "classification", "conlleval", "squad", "squad_v2", "generation")


def metric_path(name: str) -> str:
    """The folder ``evaluate.load`` reads the module ``name`` from (inside the installed package)."""
    if name not in NAMES:
        raise ConfigError(f"metric {name!r}: bert_tasks provides {', '.join(NAMES)}")
    return str(Path(__file__).resolve().parent / name)


def load(name: str, config_name: Optional[str] = None, **kwargs: Any) -> Any:
    """``evaluate.load`` of one of bert_tasks' modules (no Hub access needed)."""
    import evaluate

    return evaluate.load(metric_path(name), config_name, **kwargs)
