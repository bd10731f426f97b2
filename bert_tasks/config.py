"""Run configuration: frozen dataclasses, YAML recipes and typed ``key=value`` overrides.

A recipe is a YAML mapping with up to six sections (model, task, strategy, data,
train, output). ``task`` and ``strategy`` are plug-ins: their ``name`` picks the
config dataclass registered with the plug-in, so each accepts its own keys.
Anything not declared is an error naming the key and what is allowed.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from .errors import ConfigError
from .eval_sets import eval_sets
from .ranges import check_range
from .registry import STRATEGIES, TASKS, import_plugins
from .text_files import read_text


@dataclass(frozen=True)
class ModelConfig:
    checkpoint: str = "default"  # 'default' = embedded all-MiniLM-L6-v2; else a local folder or a Hub id
    revision: Optional[str] = None  # Hub revision (branch, tag or commit) when checkpoint is a Hub id
    dropout: Optional[float] = None  # None keeps the checkpoint's hidden dropout; 0 makes training deterministic

    def validate(self) -> None:
        check_range("model.dropout", self.dropout, 0.0, 1.0, high_open=True)
        if not self.checkpoint.strip():
            raise ConfigError("model.checkpoint: empty; give 'default', a local folder or a Hub id")


@dataclass(frozen=True)
class DataConfig:
    dataset: Optional[str] = None  # Hub data set (e.g. 'glue'), 'demo' for the embedded one, None for local files
    dataset_config: Optional[str] = None  # Hub config name (e.g. 'sst2')
    train: str = "train"  # Hub split name, or a local csv/tsv/json/jsonl/parquet file
    # as train; None skips evaluation. A mapping of names to sources scores several sets (eval_sets.py):
    # {matched: validation_matched, mismatched: {source: mm.tsv, label_column: gold}} -> matched/accuracy, ...
    validation: Union[None, str, dict[str, Any]] = "validation"
    test: Union[None, str, dict[str, Any]] = None  # as validation; used by `bert-tasks evaluate --split test` and suites
    text_column: str = "sentence"
    text_pair_column: Optional[str] = None  # set for sentence-pair tasks ([CLS] A [SEP] B [SEP])
    label_column: str = "label"
    tsv_quoting: bool = False  # False: tabs split fields and quotes are text (GLUE TSVs need this)
    conll_columns: Optional[list[str]] = None  # names of CoNLL file columns; None: tokens pos_tags chunk_tags ner_tags (4 columns), tokens tags (2)
    # Where the training split's rows live (arrow_store.py): memory (Python lists), arrow (memory-mapped
    # files, cached by fingerprint: a second run does not re-tokenise), auto (arrow for big training data).
    storage: Literal["auto", "memory", "arrow"] = "auto"
    cache_dir: Optional[str] = None  # Arrow stores; None: $BERT_TASKS_CACHE/encoded, else ~/.cache/bert_tasks/encoded
    num_proc: Optional[int] = None  # processes tokenising an Arrow store's chunks; None: 1
    # Read, encode and batch the training rows as training goes, never storing them (streaming.py; pretraining
    # corpora bigger than the disk): csv/tsv/jsonl/.txt files or a Hub split. Needs train.max_steps.
    streaming: bool = False

    def validate(self) -> None:
        check_range("data.num_proc", self.num_proc, 1)
        for split in ("validation", "test"):
            eval_sets(self, split)  # a bad set name or key fails here, naming it


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 3.0  # fractions allowed: 0.5 stops half-way through the first epoch
    batch_size: int = 32  # GLOBAL batch per optimiser micro-step, split across processes (same numbers on 1 or N)
    eval_batch_size: int = 64
    learning_rate: float = 2e-5
    weight_decay: float = 0.01  # never applied to biases and LayerNorm weights
    # Layer-wise learning-rate decay: the top encoder layer trains at learning_rate, each lower one at the
    # rate above times this factor, the embeddings one step below the bottom layer (optim.py); None: off
    layer_lr_decay: Optional[float] = None
    adam_epsilon: float = 1e-8
    warmup_steps: int = 0  # linear warmup from 0; give this or warmup_ratio, not both
    warmup_ratio: float = 0.0  # fraction of all optimiser steps spent warming up
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0  # 0 turns clipping off
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 / fp16 where the device runs it natively, else fp32 (precision.py)
    seed: int = 42
    group_by_length: bool = True  # batches of similar length: less padding, faster on CPU and GPU
    eval_every: Union[int, Literal["epoch"]] = "epoch"  # optimiser steps between evaluations, or 'epoch'
    best_metric: Optional[str] = None  # None: the task's main metric (e.g. accuracy, pearson, matthews)
    early_stopping_patience: int = 0  # evaluations without improvement before stopping; 0 never stops
    save_every: Union[int, Literal["eval"]] = "eval"  # steps between resumable checkpoints, or at each evaluation
    keep_checkpoints: int = 2  # newest resumable checkpoints kept; 0 keeps all
    log_every: int = 10  # optimiser steps between training-loss records in metrics.jsonl
    resume: bool = False  # continue from the newest checkpoint in the run directory
    max_train_samples: Optional[int] = None  # first N training rows (quick runs)
    max_steps: Optional[int] = None  # stop after this many optimiser steps (sooner than epochs would); needed with data.streaming
    max_eval_samples: Optional[int] = None
    log_with: Optional[str] = None  # an Accelerate tracker, e.g. 'tensorboard'
    cpu: bool = False  # train on the CPU even when a GPU is present
    num_workers: int = 0  # DataLoader workers; 0 is fastest for pre-tokenised data
    gradient_checkpointing: bool = False  # recompute each layer's activations in backward: less memory for longer batches, ~30% more compute; exact
    step_breakdown: bool = False  # time each phase of a step (data, forward, backward, clip, optimizer, ...): printed and in summary.json
    fast_dropout: bool = False  # CPU: dropout masks from 16 random bits an element, a quarter of the draws (fast_dropout.py); changes the random stream, so off by default
    reuse_host_memory: bool = True  # CPU (glibc): keep freed large blocks for the next step instead of page-faulting them in again (host_memory.py), and build the word-embedding gradient in one kept buffer (embedding_gradient.py); exact
    # Frozen-work cache: compute a frozen lower part (the strategy's, or a task's frozen encoder) once
    # and train the rest on its stored output. auto: whenever that is exact; true: an error when not.
    cache_frozen: Union[bool, Literal["auto"]] = "auto"
    cache_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: what the frozen part computes in
    cache_dir: Optional[str] = None  # None: $BERT_TASKS_CACHE, else ~/.cache/bert_tasks/frozen (shared by runs)
    cache_memory_gb: float = 4.0  # a bigger store is memory-mapped from disk instead of read into memory
    cache_max_gb: Optional[float] = None  # largest store written to disk; None: what the disk has free
    cache_device_gb: float = 2.0  # on a GPU: a store up to this size lives on the device, a bigger one in pinned memory
    # Dropout inside frozen layers (None: off when cached, as Embedding Recycling does; on otherwise).
    # false without a cache gives the cached run's numbers the slow way.
    frozen_dropout: Optional[bool] = None

    def validate(self) -> None:
        check_range("train.epochs", self.epochs, 0, low_open=True)
        for key in ("batch_size", "eval_batch_size", "gradient_accumulation_steps", "log_every"):
            check_range(f"train.{key}", getattr(self, key), 1)
        check_range("train.learning_rate", self.learning_rate, 0, hint="0 keeps every weight as it is")
        check_range("train.weight_decay", self.weight_decay, 0)
        check_range("train.adam_epsilon", self.adam_epsilon, 0, low_open=True)
        check_range("train.warmup_steps", self.warmup_steps, 0)
        check_range("train.warmup_ratio", self.warmup_ratio, 0, 1, high_open=True)
        check_range("train.max_grad_norm", self.max_grad_norm, 0, hint="0 turns clipping off")
        check_range("train.seed", self.seed, 0, 2**32 - 1)  # the range numpy's generator accepts
        check_range("train.early_stopping_patience", self.early_stopping_patience, 0, hint="0 never stops early")
        check_range("train.keep_checkpoints", self.keep_checkpoints, 0, hint="0 keeps all")
        check_range("train.max_train_samples", self.max_train_samples, 1)
        check_range("train.max_steps", self.max_steps, 1)
        check_range("train.layer_lr_decay", self.layer_lr_decay, 0.0, 1.0, low_open=True)
        check_range("train.max_eval_samples", self.max_eval_samples, 1)
        check_range("train.num_workers", self.num_workers, 0)
        for key in ("eval_every", "save_every"):
            value = getattr(self, key)
            if isinstance(value, int):
                check_range(f"train.{key}", value, 1, hint="a number of optimiser steps")
        for key in ("cache_memory_gb", "cache_max_gb", "cache_device_gb"):
            check_range(f"train.{key}", getattr(self, key), 0)
        if self.cache_frozen is True and self.frozen_dropout is True:
            raise ConfigError("train.cache_frozen=true and train.frozen_dropout=true: stored states have no dropout; choose one")
        if self.warmup_steps and self.warmup_ratio:
            raise ConfigError("train.warmup_steps and train.warmup_ratio: give one of them, not both")


@dataclass(frozen=True)
class OutputConfig:
    dir: str = "runs"  # parent folder of run directories
    name: Optional[str] = None  # run directory name; None: '<recipe>-<strategy>'
    overwrite: bool = False  # False refuses to reuse a finished run directory unless train.resume

    def validate(self) -> None:
        if not self.dir.strip():
            raise ConfigError("output.dir: empty; give the folder that holds run directories, e.g. runs")
        if self.name is not None:
            check_run_name(self.name, "output.name")


def check_run_name(name: str, key: str) -> None:
    """A run name is one plain folder name inside output.dir: no separators, not '.' or '..', not absolute."""
    if not name.strip() or name in (".", "..") or "/" in name or "\\" in name or Path(name).is_absolute() or "\x00" in name:
        raise ConfigError(f"{key}={name!r}: expected a plain folder name inside output.dir (no '/', '\\', '.' or '..')")


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig
    task: Any  # the dataclass registered with the task plug-in
    strategy: Any  # the dataclass registered with the strategy plug-in
    data: DataConfig
    train: TrainConfig
    output: OutputConfig
    recipe: str = "run"  # recipe name, used for default run names
    # modules defining tasks or strategies outside bert_tasks, imported before their names are looked up
    # (saved with the run, so evaluate, predict, publish and compare's cell processes import them too)
    plugins: tuple[str, ...] = ()

    @property
    def run_dir(self) -> Path:
        return Path(self.output.dir) / (self.output.name or f"{self.recipe}-{self.strategy.name}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Yaml12BoolLoader(yaml.SafeLoader):
    """YAML with only true/false as booleans: `mixed_precision: no` stays the string 'no'.
    A key given twice in one mapping is an error (plain YAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Yaml12BoolLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12BoolLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Yaml12BoolLoader)


SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "output": OutputConfig}
PLUGIN_SECTIONS = {"task": TASKS, "strategy": STRATEGIES}
DEFAULT_PLUGINS = {"task": "classification", "strategy": "full"}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    return {type(None): "null", bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` as type ``tp`` or raise a one-line ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
    elif origin is Literal:
        if value in typing.get_args(tp):
            return value
    elif origin is list:
        (item_type,) = typing.get_args(tp)
        if isinstance(value, (list, tuple)):
            return tuple(_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value))
    elif origin is dict:
        if isinstance(value, dict):
            return dict(value)
    elif tp is type(None):
        if value is None or value in ("null", "None", "none"):
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads '2e-5' as a string
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def build_dataclass(cls: type, values: dict[str, Any], section: str) -> Any:
    """Build a frozen config dataclass from a mapping, checking every key and type."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{section}: expected a mapping of keys, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{section}.{unknown[0]}: unknown key; allowed keys are {', '.join(fields)}")
    kwargs = {name: _coerce(value, hints[name], f"{section}.{name}") for name, value in values.items()}
    try:
        config = cls(**kwargs)
    except TypeError as error:  # a field without default that was not given
        raise ConfigError(f"{section}: {error}") from None
    check = getattr(config, "validate", None)
    if check is not None:
        check()
    return config


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``tree['a']['b']['c'] = value`` for ``dotted='a.b.c'``, creating sections on the way
    (an override or a comparison cell changing one key of a recipe)."""
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> list[tuple[str, Any]]:
    """``['train.learning_rate=3e-5', 'strategy.name=last_n']`` -> [(key, typed value)]."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or "." not in key:
            raise ConfigError(f"override {item!r}: expected section.key=value, e.g. train.learning_rate=3e-5")
        try:
            value = parse_yaml(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        parsed.append((key.strip(), value))
    return parsed


def config_from_dict(tree: dict[str, Any], recipe: str = "run") -> RunConfig:
    """Turn a recipe mapping (already merged with overrides) into a RunConfig."""
    if not isinstance(tree, dict):
        raise ConfigError(f"recipe {recipe}: expected a mapping with sections {', '.join(list(SECTIONS) + list(PLUGIN_SECTIONS))}")
    allowed = set(SECTIONS) | set(PLUGIN_SECTIONS) | {"recipe", "plugins"}
    unknown = sorted(set(tree) - allowed)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown section; allowed sections are {', '.join(sorted(allowed - {'recipe'}))}")
    plugins = _coerce(tree.get("plugins") or [], list[str], "plugins")
    import_plugins(plugins)
    built: dict[str, Any] = {name: build_dataclass(cls, tree.get(name) or {}, name) for name, cls in SECTIONS.items()}
    for section, registry in PLUGIN_SECTIONS.items():
        values = dict(tree.get(section) or {})
        name = str(values.get("name", DEFAULT_PLUGINS[section]))
        values["name"] = name
        built[section] = build_dataclass(registry.config_class(name), values, section)
    config = RunConfig(recipe=str(tree.get("recipe", recipe)), plugins=plugins, **built)
    if config.output.name is None:  # the default name '<recipe>-<strategy>' must stay inside output.dir too
        check_run_name(f"{config.recipe}-{config.strategy.name}", "recipe")
    return config


def load_config(recipe: str | Path | dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Load a YAML recipe (a path, or a bundled recipe name such as 'glue/sst2') and apply overrides."""
    tree, name = load_recipe_tree(recipe, overrides)
    return config_from_dict(tree, recipe=name)


def load_recipe_tree(recipe: str | Path | dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> tuple[dict[str, Any], str]:
    """The recipe as a plain mapping with overrides applied (not yet checked), and its name."""
    if isinstance(recipe, dict):
        tree, name = dict(recipe), str(recipe.get("recipe", "run"))
    else:
        path = resolve_recipe(recipe)
        try:
            tree = parse_yaml(read_text(path)) or {}  # UTF-8 (BOM dropped), or a one-line error
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{path}{where}: not valid YAML ({getattr(error, 'problem', error)})") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: expected a mapping of sections, got {type(tree).__name__}")
        name = path.stem
    tree = deep_copy_tree(tree)
    for key, value in parse_overrides(list(overrides)):
        set_dotted(tree, key, value)
    return tree, name


def deep_copy_tree(tree: Any) -> Any:
    """A copy of a recipe mapping (nested dicts and lists) that shares nothing mutable with it."""
    if isinstance(tree, dict):
        return {k: deep_copy_tree(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [deep_copy_tree(v) for v in tree]
    return tree


def merge_trees(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied section by section (a mapping merges into a mapping; anything else replaces)."""
    out = deep_copy_tree(base)
    for key, value in changes.items():
        out[key] = merge_trees(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else deep_copy_tree(value)
    return out


def recipes_dir() -> Path:
    """The bundled recipes: package data inside bert_tasks, so a wheel install has them too."""
    root = resources.files("bert_tasks").joinpath("recipes")
    if not isinstance(root, Path):  # e.g. imported from a zip archive, where recipes are no files to read
        raise ConfigError(f"bundled recipes: bert_tasks is not installed as plain files ({root}); reinstall it with pip")
    return root


def list_recipes() -> list[Path]:
    """Every bundled recipe file, sorted (names are their paths under recipes_dir(), without .yaml)."""
    root = recipes_dir()
    return sorted(root.rglob("*.yaml")) if root.is_dir() else []


def resolve_recipe(recipe: str | Path) -> Path:
    """A recipe file, or a bundled recipe by name, like 'glue/sst2'.

    A path such as 'recipes/demo.yaml' that is no file names the bundled recipe 'demo': the
    recipes used to live in a 'recipes/' folder beside the package, and commands written
    for that layout keep working.
    """
    path = Path(recipe)
    if path.is_file():
        return path
    root = recipes_dir()
    names = [path]
    if len(path.parts) > 1 and path.parts[0] == "recipes":
        names.append(Path(*path.parts[1:]))
    for name in names:
        for candidate in (root / name, root / f"{name}.yaml"):
            if candidate.is_file():
                return candidate
    raise ConfigError(f"recipe {recipe}: no such file (and no recipe of that name; see `bert-tasks recipes`)")


def save_config(config: RunConfig, path: Path) -> None:
    """Write the fully resolved config, every default spelled out, so a run can be rebuilt."""
    tree = plain_tree(config.to_dict())
    path.write_text(yaml.safe_dump(tree, sort_keys=False))


def plain_tree(value: Any) -> Any:
    """A config mapping with tuples as lists: what YAML writes and recipes hold."""
    if isinstance(value, dict):
        return {k: plain_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_tree(v) for v in value]
    return value


def with_overrides(config: RunConfig, overrides: list[str] | tuple[str, ...]) -> RunConfig:
    """A copy of ``config`` with ``key=value`` overrides applied and re-validated."""
    tree = plain_tree(config.to_dict())
    for key, value in parse_overrides(list(overrides)):
        set_dotted(tree, key, value)
    return config_from_dict(tree, recipe=config.recipe)
