"""bert_tasks: fine-tune BERT-style encoders from one YAML recipe.

    import bert_tasks
    config = bert_tasks.load_config("demo", ["strategy.name=last_n"])   # a bundled recipe, or a YAML path
    summary = bert_tasks.train(config)
    model = bert_tasks.load(summary.run_dir)
    model.predict(["The kettle boils fast and quietly."])
    bert_tasks.publish(summary.run_dir, "published/demo")      # Hub-ready folder + model card
    bert_tasks.compare("compare/demo")                          # strategies side by side

`import bert_tasks` stays light (no torch, transformers, accelerate, datasets or peft): the
names that need them (train, load, Predictor) are imported on first use (PEP 562 __getattr__).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

from .config import RunConfig, load_config
from .errors import BertTasksError
from .registry import STRATEGIES, TASKS
from .summary import RunSummary

if TYPE_CHECKING:  # for type checkers and IDEs only; at run time these come from __getattr__
    from .predictor import Predictor, load
    from .training import train

# Public name -> the module that defines it; each is imported the first time the name is used.
_LAZY = {"train": ".training", "load": ".predictor", "Predictor": ".predictor"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def compare(recipe: Union[str, Path], overrides: Sequence[str] = ()) -> Path:
    """Run (or continue) a comparison recipe; returns its report folder (see bert_tasks.comparison)."""
    from .comparison import compare as run

    return run(recipe, tuple(overrides))


def publish(run_dir: Union[str, Path], out: Union[str, Path], license: str = "apache-2.0", push: Optional[str] = None) -> Any:
    """Write a Hub-ready folder for a run's best model (see bert_tasks.publishing)."""
    from .publishing import publish as write

    return write(Path(run_dir), Path(out), license=license, push=push)


__all__ = ["RunConfig", "load_config", "train", "load", "compare", "publish", "Predictor", "RunSummary", "TASKS", "STRATEGIES", "BertTasksError"]
__version__ = "0.1.0"
