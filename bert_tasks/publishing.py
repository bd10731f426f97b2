"""``bert-tasks publish RUN_DIR --out DIR [--push REPO_ID]``: a Hub-ready folder from a run's best model.

Two formats, chosen by what the run trained:

- ``transformers``: ``full`` and ``last_n`` runs, and LoRA runs with the update merged into the
  weights, become a stock model (``AutoModelForSequenceClassification``,
  ``...TokenClassification``, ``...QuestionAnswering``, ``EncoderDecoderModel`` or the native
  seq2seq class) that transformers and ``pipeline(...)`` load with no bert_tasks installed.
- ``bert_tasks``: adapter and layer-mix runs (and heads transformers has no class for, e.g.
  mean pooling) hold only the trained weights plus the base checkpoint's reference and hash;
  ``bert_tasks.load(DIR)`` rebuilds the model.

Both carry the tokenizer, the training config, the task state, the metrics and a model card
(``README.md``) whose YAML metadata holds a ``model-index`` with the evaluation results.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
)

from .assembly import Assembly, build_model, build_task
from .config import RunConfig, _plain, config_from_dict, save_config
from .errors import BertTasksError
from .model import TaskModel
from .rundir import BASE_FILE, BEST_DIR, TASK_FILE, TRAINED_FILE, load_trained, read_config_file, rebuild_small_save
from .publishing_card import model_card
from .summary import RunSummary

TRAINING_CONFIG_FILE = "training_config.yaml"
EXPORT_FILE = "bert_tasks_export.json"  # {"format": "transformers" | "bert_tasks", ...}
METRICS_FILE = "metrics.json"
OUR_WEIGHTS_FILE = "bert_tasks_model.safetensors"  # bert_tasks format with every weight (no stock class)

STOCK_CLASSES = {
    "classification": AutoModelForSequenceClassification,
    "tagging": AutoModelForTokenClassification,
    "span_qa": AutoModelForQuestionAnswering,
}
PIPELINE_TAGS = {
    "classification": "text-classification",
    "tagging": "token-classification",
    "span_qa": "question-answering",
    "seq2seq": "text2text-generation",
}


@dataclass
class Export:
    folder: Path
    format: str  # 'transformers' or 'bert_tasks'
    reason: str  # why this format


def _stock_state(model: TaskModel, prefix: str) -> dict[str, torch.Tensor]:
    """Our parameter names -> the stock class's: backbone.X -> bert.X, head.pooler.X -> bert.pooler.X, head.X -> X."""
    state = {}
    for name, tensor in model.state_dict().items():
        if name.startswith("backbone."):
            state[f"{prefix}.{name[len('backbone.'):]}"] = tensor
        elif name.startswith("head.pooler."):
            state[f"{prefix}.pooler.{name[len('head.pooler.'):]}"] = tensor
        elif name.startswith("head."):
            state[name[len("head."):]] = tensor
        else:
            return {}  # e.g. adapters or a layer mix: no stock equivalent
    return state


def _our_state(stock: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The inverse of ``_stock_state``."""
    state = {}
    for name, tensor in stock.items():
        if name.startswith(f"{prefix}.pooler."):
            state[f"head.pooler.{name[len(prefix) + len('.pooler.'):]}"] = tensor
        elif name.startswith(f"{prefix}."):
            state[f"backbone.{name[len(prefix) + 1:]}"] = tensor
        else:
            state[f"head.{name}"] = tensor
    return state


def _labelled_config(assembly: Assembly) -> Any:
    """The encoder config with what the stock head class needs: labels, problem type."""
    config = assembly.model.backbone.config.__class__.from_dict(assembly.model.backbone.config.to_dict())
    task = assembly.task
    labels = getattr(task, "labels", None)
    if getattr(task, "regression", False):
        config.num_labels, config.problem_type = 1, "regression"
        config.id2label, config.label2id = {0: "score"}, {"score": 0}
    elif labels:
        config.num_labels = len(labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: i for i, label in enumerate(labels)}
        if task.registered_name == "classification":
            config.problem_type = "single_label_classification"
    return config


def to_stock_model(assembly: Assembly) -> tuple[Optional[PreTrainedModel], str]:
    """The run's model as a stock transformers model (weights identical), or None and why not."""
    model, task_name = assembly.model, assembly.task.registered_name
    if task_name == "seq2seq":
        return model.backbone, "the encoder-decoder is a stock transformers model"
    stock_class = STOCK_CLASSES.get(task_name)
    if stock_class is None:
        return None, f"no transformers class for task {task_name!r}"
    if getattr(assembly.task.config, "pooling", "cls") != "cls":
        return None, "mean pooling has no transformers class"
    config = _labelled_config(assembly)
    stock = stock_class.from_config(config)
    state = _stock_state(model, stock.base_model_prefix)
    if not state:
        return None, f"strategy {assembly.strategy.describe()} adds modules transformers does not have"
    missing, unexpected = stock.load_state_dict(state, strict=False)
    if missing or unexpected:
        return None, f"{type(stock).__name__} does not match the model ({len(missing)} missing, {len(unexpected)} unexpected weights)"
    return stock, f"{type(stock).__name__} holds every weight"


def publish(run_dir: Path, out: Path, license: str = "apache-2.0", push: Optional[str] = None, private: bool = False) -> Export:
    """Write the Hub-ready folder ``out`` for the best model of ``run_dir``; push it if asked."""
    run_dir, out = Path(run_dir), Path(out)
    config, assembly = load_trained(run_dir)
    summary = RunSummary.load(run_dir)
    if out.exists() and any(out.iterdir()):
        raise BertTasksError(f"--out {out}: the folder exists and is not empty; choose a new one")
    out.mkdir(parents=True, exist_ok=True)
    strategy = assembly.strategy
    merged = hasattr(strategy, "merge")
    if merged:  # LoRA: fold the update into the weights; the export is a plain model
        strategy.merge(assembly.model)
    if strategy.small_save and not merged:
        stock, reason = None, f"strategy {strategy.describe()} adds weights that transformers models do not have"
    else:
        stock, reason = to_stock_model(assembly)
    if stock is not None:
        stock.save_pretrained(str(out))
        export_format = "transformers"
    else:
        export_format = "bert_tasks"
        best = run_dir / BEST_DIR
        if (best / BASE_FILE).is_file():
            shutil.copy2(best / TRAINED_FILE, out / TRAINED_FILE)
            shutil.copy2(best / BASE_FILE, out / BASE_FILE)
        else:
            save_file({k: v.contiguous() for k, v in assembly.model.state_dict().items()}, str(out / OUR_WEIGHTS_FILE))
        assembly.model.backbone.config.save_pretrained(str(out))
    assembly.tokenizer.save_pretrained(str(out))
    save_config(config, out / TRAINING_CONFIG_FILE)
    shutil.copy2(run_dir / TASK_FILE, out / TASK_FILE)
    (out / METRICS_FILE).write_text(json.dumps({"eval": summary.eval, "best_metric": summary.best_metric, "best_value": summary.best_value}, indent=2))
    export = {"format": export_format, "reason": reason, "task": config.task.name, "strategy": strategy.describe(),
              "pipeline_tag": PIPELINE_TAGS.get(config.task.name)}
    if stock is not None:
        export["class"] = type(stock).__name__
    (out / EXPORT_FILE).write_text(json.dumps(export, indent=2))
    (out / "README.md").write_text(model_card(config, summary, export, out.name, license))
    if push:
        push_folder(out, push, private)
    return Export(out, export_format, reason)


def push_folder(folder: Path, repo_id: str, private: bool = False) -> str:
    """Upload with the user's Hugging Face token (HF_TOKEN or `huggingface-cli login`); one-line errors."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message="Upload from bert-tasks publish")
    except Exception as error:  # network, authentication or permission: all end as one line
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise BertTasksError(f"--push {repo_id}: upload failed ({type(error).__name__}: {first[:200]}); the folder {folder} is written") from None
    return str(getattr(info, "commit_url", repo_id))


def is_published(folder: Path) -> bool:
    return (Path(folder) / EXPORT_FILE).is_file()


def load_published(folder: Path) -> tuple[RunConfig, Assembly]:
    """Rebuild the bert_tasks model of a published folder (either format) for prediction."""
    folder = Path(folder)
    export = json.loads((folder / EXPORT_FILE).read_text())
    config = read_config_file(folder / TRAINING_CONFIG_FILE)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    task = build_task(config, tokenizer)
    task.load_state_dict(json.loads((folder / TASK_FILE).read_text()))
    if export["format"] == "bert_tasks" and (folder / BASE_FILE).is_file():
        assembly = rebuild_small_save(config, task, tokenizer, folder)
    else:
        # the weights hold everything; strategy-added modules (e.g. merged LoRA) are already folded in
        plain = config_from_dict({**_plain(config.to_dict()), "strategy": {"name": "full"}}, recipe=config.recipe)
        network_config = AutoConfig.from_pretrained(str(folder))
        assembly = build_model(plain, task, tokenizer, network_config)
        if export["format"] == "bert_tasks":
            state = load_file(str(folder / OUR_WEIGHTS_FILE))
        else:
            stock = load_file(str(folder / "model.safetensors"))
            if config.task.name == "seq2seq":
                state = {f"backbone.{k}": v for k, v in stock.items()}
            else:
                state = _our_state(stock, assembly.model.backbone.base_model_prefix)
        missing, unexpected = assembly.model.load_state_dict(state, strict=False)
        tied = {name for name, _ in assembly.model.named_parameters(remove_duplicate=False)} - {name for name, _ in assembly.model.named_parameters()}
        real_missing = [m for m in missing if m not in tied and "pooler" not in m]
        if real_missing or unexpected:
            raise BertTasksError(f"{folder}: weights do not fit the model ({real_missing[:2]} missing, {unexpected[:2]} unexpected)")
    assembly.model.eval()
    return config, assembly
