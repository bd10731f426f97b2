"""The model card (README.md) of a published folder: Hub YAML metadata and a body that says what
was trained, how, how well, and how to load it."""
from __future__ import annotations

from typing import Any

import yaml

from .config import RunConfig
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
    results = [{"type": key, "name": key, "value": float(value)} for key, value in summary.eval.items() if isinstance(value, (int, float))]
    data = config.data
    meta: dict[str, Any] = {
        "license": license,
        "base_model": base_model(config),
        "library_name": "transformers" if export["format"] == "transformers" else "bert_tasks",
        "pipeline_tag": pipeline_tag,
        "tags": ["bert_tasks", config.task.name, config.strategy.name],
        "metrics": [key for key in summary.eval if key != "loss"],
    }
    if data.dataset and data.dataset != "demo":
        meta["datasets"] = [data.dataset]
    meta["model-index"] = [{
        "name": name,
        "results": [{
            "task": {"type": pipeline_tag, "name": pipeline_tag.replace("-", " ").title() if pipeline_tag else config.task.name},
            "dataset": {"name": dataset_name(config), "type": data.dataset or "local",
                        **({"config": data.dataset_config} if data.dataset_config else {}), "split": str(data.validation)},
            "metrics": results,
        }],
    }]
    return meta


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
    rows = "\n".join(f"| {key} | {value:.4f} |" for key, value in summary.eval.items() if isinstance(value, (int, float)))
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

Evaluated on {dataset_name(config)}, split `{config.data.validation}`; best checkpoint by `{summary.best_metric}` (step {summary.best_step}).

| metric | value |
|---|---|
{rows}

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
