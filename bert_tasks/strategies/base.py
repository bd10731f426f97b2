"""What every tuning strategy provides. A strategy knows nothing about tasks.

Comparisons, parameter reports and publishing ask the strategy what they need
(``default_learning_rates``, ``parameter_group``, ``mergeable`` / ``merge``), so none of
them names a strategy; each attribute has a neutral default here.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Optional

from ..model import TaskModel


class Strategy(ABC):
    """Decides which parameters train and what the head sees.

    ``apply`` runs once on a freshly built TaskModel (pretrained encoder plus a new
    head) before the optimiser is made: it may freeze parameters, inject modules,
    or replace ``model.features``. The head always trains.
    """

    registered_name: str = ""
    # True: a run saves only the trained weights plus the base checkpoint's reference and hash
    # (megabytes instead of the whole encoder); loading rebuilds the base and adds them.
    small_save: bool = False
    # options always shown in tables (others only when they differ from their defaults)
    label_keys: tuple[str, ...] = ()
    # The learning rates `bert-tasks compare` tries when a recipe gives none; empty: the recipe must.
    default_learning_rates: tuple[float, ...] = ()
    # True: ``merge`` folds what the strategy added into the pretrained weights, leaving a plain
    # network that publishing can export as a stock transformers model.
    mergeable: bool = False

    def __init__(self, config: Any) -> None:
        self.config = config

    @abstractmethod
    def apply(self, model: TaskModel) -> None: ...

    def inspect(self, model: TaskModel) -> dict[str, Any]:
        """Learned values worth printing (`bert-tasks inspect`), e.g. layer weights."""
        return {}

    def write_artifacts(self, model: TaskModel, run_dir: Path) -> None:
        """Files written beside the best checkpoint after training (plots, ...)."""

    def parameter_group(self, name: str) -> Optional[str]:
        """The parameter-report group of a parameter this strategy added (e.g. 'adapters'), or None
        for the network's own parameters, which are grouped by where they sit (embeddings, layer k, head)."""
        return None

    def frozen_layers(self, model: TaskModel) -> Optional[int]:
        """How many bottom layers of the encoder (with its embeddings) this strategy leaves frozen and
        untouched: no trainable weight, nothing injected, the pretrained computation exactly. The loop
        may then compute their output once and reuse it (``train.cache_frozen``). None: nothing of the
        encoder is both (the embeddings train, or the strategy changes every layer)."""
        return None

    def merge(self, model: TaskModel) -> None:
        """Fold the strategy's trained weights into the pretrained ones (only when ``mergeable``)."""
        raise NotImplementedError(f"strategy {self.registered_name!r} cannot be merged into the base weights")

    def describe(self) -> str:
        """Short human label for tables: the name and the options that differ from their defaults."""
        defaults = type(self.config)()
        options = {k: v for k, v in vars(self.config).items() if k != "name" and (k in self.label_keys or v != getattr(defaults, k))}
        inner = ",".join(f"{k}={v}" for k, v in options.items())
        return f"{self.config.name}:{inner}" if inner else self.config.name
