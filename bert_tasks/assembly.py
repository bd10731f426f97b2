"""Build the pieces of a run from its config: tokenizer, task, model, strategy."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from transformers import PretrainedConfig, PreTrainedTokenizerBase

from .arrow_store import read_file_to_arrow, store_root, streamable_file, wants_arrow
from .streaming import CHUNK_ROWS, check_streaming, first_chunk, stream_chunks
from .backbone import check_positions, load_backbone_config, load_tokenizer
from .config import ModelConfig, RunConfig
from .data import Split, load_split
from .errors import DataError
from .eval_sets import EvalSet, eval_sets
from .model import TaskModel
from .parameters import weights_hash
from .registry import STRATEGIES, TASKS
from .strategies.base import Strategy
from .tasks.base import Task


@dataclass
class Assembly:
    task: Task
    model: TaskModel
    strategy: Strategy
    tokenizer: PreTrainedTokenizerBase
    backbone_config: PretrainedConfig
    model_config: Optional[ModelConfig] = None  # where the pretrained encoder came from
    base_hash: Optional[str] = None  # sha256 of the pretrained encoder weights (small-save strategies only)


def build_task(config: RunConfig, tokenizer: PreTrainedTokenizerBase) -> Task:
    return TASKS.build(config.task, config.data, tokenizer)


def build_model(
    config: RunConfig,
    task: Task,
    tokenizer: PreTrainedTokenizerBase,
    backbone_config: Optional[PretrainedConfig] = None,
    apply_strategy: bool = True,
) -> Assembly:
    """Encoder + head with the strategy applied.

    With ``backbone_config`` (the saved network config) the network is built empty from it
    (the caller loads trained weights next); otherwise pretrained weights come from the checkpoint.
    ``apply_strategy=False`` leaves the plain network (for weights a strategy was merged into).
    """
    strategy = STRATEGIES.build(config.strategy)
    model = task.build_model(config.model, backbone_config)
    base_hash = None
    if backbone_config is None and strategy.small_save:
        fresh = {name.removeprefix("backbone.") for name in model.new_parameters}  # random, not part of the base
        base_hash = weights_hash(model.backbone, exclude=fresh)
    if apply_strategy:
        strategy.apply(model)
        model.added_group = strategy.parameter_group
    return Assembly(task, model, strategy, tokenizer, model.backbone.config, config.model, base_hash)


def prepare_task(config: RunConfig) -> tuple[Task, dict[str, Split]]:
    """Tokenizer, data and the task fitted on it: everything that can fail on bad input, before
    any model weights are loaded."""
    tokenizer = load_tokenizer(config.model.checkpoint, config.model.revision)
    backbone_config = load_backbone_config(config.model.checkpoint, config.model.revision)  # fail fast on a bad checkpoint
    task = build_task(config, tokenizer)
    check_positions(backbone_config, task.position_lengths(), config.model.checkpoint)
    check_streaming(config, task)
    splits = read_splits(config)
    task.fit(splits["train"])
    return task, splits


def assemble(config: RunConfig) -> tuple[Assembly, dict[str, Split]]:
    """Everything a training run needs: read the data, fit the task on it, build the model."""
    task, splits = prepare_task(config)
    return build_model(config, task, task.tokenizer), splits


def read_splits(config: RunConfig, names: tuple[str, ...] = ("train", "validation")) -> dict[str, Split]:
    """The splits ``names`` asks for, keyed 'train', and for evaluation splits one key per set:
    'validation' for a plain source, 'validation.matched' for each named set (``EvalSet.split_key``)."""
    data = config.data
    plain_text = TASKS.plugin_class(config.task.name).plain_text_files  # what a .txt file holds
    splits = {}
    if "train" in names and data.train is not None and data.streaming:
        splits["train"] = first_chunk(stream_chunks(config, plain_text, CHUNK_ROWS))  # what the task is fitted and checked on
    elif "train" in names and data.train is not None:
        big_file = streamable_file(data.train)
        if big_file is not None and wants_arrow(data.storage, source_bytes=big_file.stat().st_size):
            split = read_file_to_arrow("train", big_file, data.tsv_quoting, store_root(data.cache_dir))
        else:
            split = load_split("train", data.train, data.dataset, data.dataset_config, data.tsv_quoting, data.conll_columns, plain_text)
        splits["train"] = split.head(config.train.max_train_samples)
    for name in names:
        if name == "train":
            continue
        for eval_set in eval_sets(data, name):
            splits[eval_set.split_key] = read_eval_set(eval_set, plain_text).head(config.train.max_eval_samples)
    return splits


def read_eval_set(eval_set: EvalSet, plain_text: bool = False) -> Split:
    """One evaluation set, its columns renamed to the run's where the set says they differ."""
    read = eval_set.read
    split = load_split(eval_set.split_key, eval_set.source, read["dataset"], read["dataset_config"], read["tsv_quoting"], read["conll_columns"], plain_text)
    if eval_set.renames:
        present = split.dataset.column_names
        for column, run_column in eval_set.renames.items():
            if column not in present:
                raise DataError(f"{split.origin}: missing column {column!r} (set by {eval_set.key}); the columns are {', '.join(present)}")
        kept = [c for c in present if c not in eval_set.renames and c in eval_set.renames.values()]
        split.dataset = split.dataset.remove_columns(kept).rename_columns(eval_set.renames)  # the set's own column wins
    return split
