"""The model card (README.md) of a published folder: Hub YAML metadata and a body that says what
was trained, how, how well, and how to load it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .config import RunConfig
from .data import is_local_file
from .eval_sets import EvalSet, eval_sets, results_of
from .summary import RunSummary

DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"  # what model.checkpoint=default is


def base_model(config: RunConfig) -> str:
    return DEFAULT_BASE_MODEL if config.model.checkpoint == "default" else config.model.checkpoint


def dataset_name(config: RunConfig) -> str:
    data = config.data
    if data.dataset and data.dataset != "demo":
        return data.dataset + (f" ({data.dataset_config})" if data.dataset_config else "")
    if data.dataset == "demo":
        return "bert_tasks demo reviews"
    return str(data.train).rsplit("/", 1)[-1]


def metadata(config: RunConfig, summary: RunSummary, export: dict[str, Any], name: str, license: str) -> dict[str, Any]:
    """The YAML block the Hub reads: license, base model, data, metrics, pipeline, model-index."""
    pipeline_tag = export.get("pipeline_tag")
    data = config.data
    meta: dict[str, Any] = {
        "license": license,
        "base_model": base_model(config),
        "library_name": "transformers" if export["format"] == "transformers" else "bert_tasks",
        "pipeline_tag": pipeline_tag,
        "tags": ["bert_tasks", config.task.name, config.strategy.name],
        "metrics": list(dict.fromkeys(key for _, metrics in results_by_set(config, summary) for key in metrics if key != "loss")),
    }
    if data.dataset and data.dataset != "demo":
        meta["datasets"] = [data.dataset]
    task = {"type": pipeline_tag, "name": pipeline_tag.replace("-", " ").title() if pipeline_tag else config.task.name}
    meta["model-index"] = [{"name": name, "results": [
        {"task": task, "dataset": dataset_entry(config, eval_set), "metrics": [{"type": key, "name": key, "value": float(value)} for key, value in metrics.items()]}
        for eval_set, metrics in results_by_set(config, summary)
    ]}]
    return meta


def dataset_entry(config: RunConfig, eval_set: EvalSet) -> dict[str, Any]:
    """The model-index 'dataset' of one evaluation set: its Hub data set and config, or a local file."""
    dataset, dataset_config = eval_set.read.get("dataset"), eval_set.read.get("dataset_config")
    if dataset and dataset != "demo" and not is_local_file(eval_set.source):
        return {"name": dataset + (f" ({dataset_config})" if dataset_config else ""), "type": dataset, "split": eval_set.source,
                **({"config": dataset_config} if dataset_config else {})}
    name = dataset_name(config) if eval_set.name is None else f"{eval_set.name} ({Path(eval_set.source).name})"
    return {"name": name, "type": "local", "split": eval_set.source}


def results_by_set(config: RunConfig, summary: RunSummary) -> list[tuple[EvalSet, dict[str, float]]]:
    """Each evaluation set with its numeric metrics under their plain names (one model-index result each)."""
    sets = eval_sets(config.data) or [EvalSet("validation", None, "-")]
    out = []
    for eval_set in sets:
        metrics = results_of(summary.eval, eval_set.metric(""), summary.eval_sets) if eval_set.name else summary.eval
        out.append((eval_set, {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}))
    return out


def _sanity(summary: RunSummary) -> str:
    """The trivial baselines beside the results, and what the last evaluation warned about."""
    lines = []
    for label, baseline in summary.baselines.items():
        scores = ", ".join(f"{k} {v:.4f}" for k, v in baseline.items() if k != "name" and isinstance(v, (int, float)))
        lines.append(f"Trivial baseline on `{label}` ({baseline['name']}): {scores}.")
    lines.extend(f"**Warning** (last evaluation): {warning}." for warning in summary.warnings)
    return "\n" + "\n\n".join(lines) + "\n" if lines else ""


def _usage(task: Any, export: dict[str, Any], name: str) -> str:
    if export["format"] == "transformers":
        return (
            f"```python\n{task.stock_usage(name, export.get('class', 'AutoModel'))}```\n\n"
            "or with bert_tasks (same predictions, task-aware decoding):\n\n"
            "```python\nimport bert_tasks\n\n"
            f'model = bert_tasks.load("{name}")   # a local folder\n'
            "```\n"
        )
    return (
        "This folder holds the weights in bert_tasks' own layout (for adapters, a layer mix, ... only the\n"
        "trained ones, with a reference to the base checkpoint and its sha256); bert_tasks rebuilds the model:\n\n"
        "```python\nimport bert_tasks\n\n"
        f'model = bert_tasks.load("{name}")   # a local folder (download it first)\n'
        "```\n"
    )


def model_card(config: RunConfig, summary: RunSummary, export: dict[str, Any], name: str, license: str, task: Any) -> str:
    """The README.md of a published folder; ``task`` (the run's Task) says how its stock export loads."""
    meta = metadata(config, summary, export, name, license)
    train = config.train
    rows = "\n".join(f"| {eval_set.label} | {key} | {value:.4f} |" for eval_set, metrics in results_by_set(config, summary) for key, value in metrics.items())
    split_names = ", ".join(f"`{s.label}` ({s.source})" if s.name else f"`{s.source}`" for s in eval_sets(config.data))
    hyper = {
        "learning rate": train.learning_rate, "batch size": train.batch_size, "epochs": train.epochs, "warmup ratio": train.warmup_ratio,
        "weight decay": train.weight_decay, "seed": train.seed, "precision": summary.precision or train.mixed_precision, "steps": summary.steps,
    }
    task_options = {k: v for k, v in config.task.__dict__.items() if k != "name" and v is not None}
    body = f"""# {name}

A **{config.task.name}** model fine-tuned from [`{base_model(config)}`](https://huggingface.co/{base_model(config)}) with
bert_tasks, tuning strategy **{export['strategy']}**:
{summary.trainable_parameters:,} of {summary.total_parameters:,} parameters trained ({summary.trainable_percent:.2f}%).
Export format: `{export['format']}` ({export['reason']}).

## Results

Evaluated on {dataset_name(config)}, {'sets' if summary.eval_sets else 'split'} {split_names or '-'}; best checkpoint by `{summary.best_metric}` (step {summary.best_step}).

| set | metric | value |
|---|---|---|
{rows}
{_sanity(summary)}
## Training

Data: {dataset_name(config)} (train: `{config.data.train}`). Task options: {', '.join(f'{k}={v}' for k, v in task_options.items()) or 'defaults'}.

| hyperparameter | value |
|---|---|
{chr(10).join(f'| {k} | {v} |' for k, v in hyper.items())}

Train time {summary.train_seconds:.0f} s ({summary.train_samples_per_second:.1f} samples/s) on {summary.processes} process(es).
The full configuration is in `training_config.yaml`; the metrics in `metrics.json`.

## How to load

{_usage(task, export, name)}"""
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n\n" + body
