"""Several evaluation sets per run: ``data.validation`` / ``data.test`` as a mapping of names to sources.

One set given as a plain source (``data.validation: dev.tsv``) keeps the plain metric names
(``accuracy``); named sets (``{matched: ..., mismatched: ...}``) prefix every metric with the
set's name (``matched/accuracy``, ``mismatched/loss``), so one run can score MNLI's two dev
sets, in- and out-of-domain data, or other languages' sets after training on English.

A set is a source string, or a mapping with ``source`` and any of the keys in ``SET_KEYS``:
where to read it (``dataset``, ``dataset_config``, ``tsv_quoting``, ``conll_columns``; the run's
``data.*`` when absent) and which of its columns hold what the run's columns hold
(``text_column``, ``text_pair_column``, ``label_column``: renamed to the run's names on reading).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from .errors import ConfigError

READ_KEYS = ("dataset", "dataset_config", "tsv_quoting", "conll_columns")
COLUMN_KEYS = ("text_column", "text_pair_column", "label_column")
SET_KEYS = ("source", *READ_KEYS, *COLUMN_KEYS)
SET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
RESERVED_NAMES = ("loss", "train_seconds", "step", "epoch", "event")


@dataclass(frozen=True)
class EvalSet:
    """Where one evaluation set comes from and what its metrics are called."""

    split: str  # 'validation' or 'test': the data key it was given under
    name: Optional[str]  # None: the one unnamed set, whose metrics keep plain names
    source: str
    read: dict[str, Any] = field(default_factory=dict)  # dataset, dataset_config, tsv_quoting, conll_columns
    renames: dict[str, str] = field(default_factory=dict)  # the set's column -> the run's column

    @property
    def key(self) -> str:
        """The config key that named it, for error messages: data.validation or data.validation.matched."""
        return f"data.{self.split}" + (f".{self.name}" if self.name else "")

    @property
    def split_key(self) -> str:
        """Its key among a run's splits (``read_splits``): 'validation', or 'validation.matched'."""
        return self.key.removeprefix("data.")

    @property
    def label(self) -> str:
        """'validation', or the set's name."""
        return self.name or self.split

    def metric(self, metric: str) -> str:
        return f"{self.name}/{metric}" if self.name else metric


def eval_sets(data: Any, split: str = "validation") -> list[EvalSet]:
    """The sets ``data.<split>`` names (empty when it is None), in the order given; bad entries fail
    here, with the key at fault."""
    value = getattr(data, split)
    defaults = {key: getattr(data, key) for key in READ_KEYS}
    if value is None:
        return []
    if isinstance(value, str):
        return [EvalSet(split, None, value, defaults)]
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"data.{split}: expected a source (file or Hub split) or a mapping of set names to sources, got {value!r}")
    sets = []
    for name, entry in value.items():
        name = str(name)
        key = f"data.{split}.{name}"
        if not SET_NAME.match(name) or name in RESERVED_NAMES:
            raise ConfigError(f"{key}: a set name is letters, digits, '_', '-' or '.' (not {', '.join(RESERVED_NAMES)}), got {name!r}")
        if isinstance(entry, str):
            entry = {"source": entry}
        if not isinstance(entry, dict):
            raise ConfigError(f"{key}: expected a source or a mapping with 'source' and any of {', '.join(SET_KEYS[1:])}, got {entry!r}")
        unknown = sorted(set(entry) - set(SET_KEYS))
        if unknown:
            raise ConfigError(f"{key}.{unknown[0]}: unknown key; a set takes {', '.join(SET_KEYS)}")
        source = entry.get("source")
        if not isinstance(source, str) or not source.strip():
            raise ConfigError(f"{key}.source: expected a file or Hub split name, got {source!r}")
        read = {**defaults, **{k: entry[k] for k in READ_KEYS if k in entry}}
        if read["conll_columns"] is not None:
            read["conll_columns"] = tuple(read["conll_columns"])
        renames = {}
        for column_key in COLUMN_KEYS:
            if entry.get(column_key) is None:
                continue
            run_column = getattr(data, column_key)
            if run_column is None:
                raise ConfigError(f"{key}.{column_key}: the run sets no data.{column_key} to map it onto")
            if entry[column_key] != run_column:
                renames[str(entry[column_key])] = run_column
        sets.append(EvalSet(split, name, source, read, renames))
    return sets


def with_prefix(results: dict[str, float], eval_set: EvalSet) -> dict[str, float]:
    """``results`` under the set's metric names."""
    return {eval_set.metric(k): v for k, v in results.items()}


def headline(results: dict[str, Any], sets: Sequence[EvalSet]) -> dict[str, Any]:
    """The metrics a progress line shows: each set's own metrics, not per-class breakdowns (``PER/f1``)."""
    named = {s.name for s in sets if s.name}
    shown = {}
    for key, value in results.items():
        first, _, rest = key.partition("/")
        inner = rest if first in named else key
        if "/" not in inner:
            shown[key] = value
    return shown


def resolve_best_metric(best_metric: Optional[str], sets: Sequence[EvalSet], metric_names: Sequence[str]) -> str:
    """``train.best_metric`` as a recorded metric name: None means the first set's main metric; with
    named sets, a plain metric means the first set's and ``set/metric`` names any set's."""
    allowed = (*metric_names, "loss")
    first = sets[0] if sets else None
    chosen = best_metric or metric_names[0]
    set_name, slash, metric = chosen.partition("/")
    names = [s.name for s in sets if s.name]
    if slash and names:
        if set_name not in names:
            raise ConfigError(f"train.best_metric={chosen!r}: no evaluation set {set_name!r}; the sets are {', '.join(names)}")
    else:
        metric = chosen
    if metric not in allowed:
        raise ConfigError(f"train.best_metric={chosen!r}: the task reports {', '.join(allowed)}")
    if slash and names:
        return chosen
    return first.metric(metric) if first is not None else metric


def on_each_set(metric: str, set_names: Sequence[str]) -> list[str]:
    """``metric`` of one named set as the same metric of every set: 'matched/accuracy' ->
    ['matched/accuracy', 'mismatched/accuracy'] (a table's columns); unchanged without named sets."""
    first, slash, inner = metric.partition("/")
    if not slash or first not in set_names:
        return [metric]
    return [f"{name}/{inner}" for name in set_names]


def results_of(results: dict[str, Any], metric: str, set_names: Sequence[str]) -> dict[str, Any]:
    """The plain-named results of the set ``metric`` belongs to (all of them without named sets):
    what a task adopts from an evaluation (e.g. QA's tuned no-answer threshold)."""
    first, slash, _ = metric.partition("/")
    if not slash or first not in set_names:
        return dict(results)
    return {key[len(first) + 1:]: value for key, value in results.items() if key.startswith(f"{first}/")}
