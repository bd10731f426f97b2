"""``bert-tasks publish RUN_DIR --out DIR [--push REPO_ID]``: a Hub-ready folder from a run's best model.

Two formats, chosen by what the run trained:

- ``transformers``: runs whose strategy adds no modules (or merges them into the weights, e.g.
  LoRA) become the stock model the task names (``Task.to_stock``: e.g. an
  ``AutoModelForSequenceClassification`` or an encoder-decoder) that transformers and
  ``pipeline(Task.pipeline_tag, ...)`` load with no bert_tasks installed.
- ``bert_tasks``: small-save runs (adapters, a layer mix, ...) hold only the trained weights plus
  the base checkpoint's reference and hash; heads transformers has no class for (e.g. mean
  pooling) hold every weight. ``bert_tasks.load(DIR)`` rebuilds the model.

Both carry the tokenizer, the training config, the task state, the metrics and a model card
(``README.md``) whose YAML metadata holds a ``model-index`` with the evaluation results.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoTokenizer

from .assembly import Assembly, build_model, build_task
from .config import save_config
from .errors import BertTasksError
from .publishing_card import model_card
from .rundir import BASE_FILE, BEST_DIR, TASK_FILE, TRAINED_FILE, SavedModel, load_trained, read_config_file, readable_weights, rebuild_small_save
from .summary import RunSummary

TRAINING_CONFIG_FILE = "training_config.yaml"
EXPORT_FILE = "bert_tasks_export.json"  # {"format": "transformers" | "bert_tasks", "merged": bool, ...}
METRICS_FILE = "metrics.json"
OUR_WEIGHTS_FILE = "bert_tasks_model.safetensors"  # bert_tasks format with every weight (no stock class)


@dataclass
class Export:
    folder: Path
    format: str  # 'transformers' or 'bert_tasks'
    reason: str  # why this format


def publish(run_dir: Path, out: Path, license: str = "apache-2.0", push: Optional[str] = None, private: bool = False) -> Export:
    """Write the Hub-ready folder ``out`` for the best model of ``run_dir``; push it if asked."""
    run_dir, out = Path(run_dir), Path(out)
    config, assembly = load_trained(run_dir)
    summary = RunSummary.load(run_dir)
    if out.exists() and any(out.iterdir()):
        raise BertTasksError(f"--out {out}: the folder exists and is not empty; choose a new one")
    out.mkdir(parents=True, exist_ok=True)
    strategy, task = assembly.strategy, assembly.task
    merged = strategy.mergeable
    if merged:  # e.g. LoRA: fold the update into the weights; the export is a plain model
        strategy.merge(assembly.model)
    if strategy.small_save and not merged:
        stock, reason = None, f"strategy {strategy.describe()} adds weights that transformers models do not have"
    else:
        stock, reason = task.to_stock(assembly.model)
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
              "pipeline_tag": task.pipeline_tag, "merged": merged}
    if stock is not None:
        export["class"] = type(stock).__name__
    (out / EXPORT_FILE).write_text(json.dumps(export, indent=2))
    (out / "README.md").write_text(model_card(config, summary, export, out.name, license, task))
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


class PublishedModel(SavedModel):
    """A folder written by ``publish`` (either format)."""

    def load_model(self) -> Assembly:
        folder, config, task = self.folder, self.config, self.task
        export = json.loads((folder / EXPORT_FILE).read_text())
        if export["format"] == "bert_tasks" and (folder / BASE_FILE).is_file():
            assembly = rebuild_small_save(config, task, task.tokenizer, folder)
        else:
            # the weights hold everything; a merged strategy's modules (e.g. LoRA) are folded in, so the
            # plain network takes them (folders from before "merged" was recorded hold plain networks too)
            network_config = AutoConfig.from_pretrained(str(folder))
            assembly = build_model(config, task, task.tokenizer, network_config, apply_strategy=not export.get("merged", True))
            weights = folder / (OUR_WEIGHTS_FILE if export["format"] == "bert_tasks" else "model.safetensors")
            with readable_weights(weights):
                state = load_file(str(weights))
            if export["format"] != "bert_tasks":
                state = task.from_stock(state, assembly.model)
            missing, unexpected = assembly.model.load_state_dict(state, strict=False)
            tied = {name for name, _ in assembly.model.named_parameters(remove_duplicate=False)} - {name for name, _ in assembly.model.named_parameters()}
            real_missing = [m for m in missing if m not in tied and "pooler" not in m]
            if real_missing or unexpected:
                raise BertTasksError(f"{folder}: weights do not fit the model ({real_missing[:2]} missing, {unexpected[:2]} unexpected)")
        assembly.model.eval()
        return assembly


def open_published(folder: Path) -> PublishedModel:
    """A published folder's config, tokenizer and task (state from task.json); no weights are read yet."""
    folder = Path(folder)
    config = read_config_file(folder / TRAINING_CONFIG_FILE)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    task = build_task(config, tokenizer)
    task.load_state_dict(json.loads((folder / TASK_FILE).read_text()))
    return PublishedModel(folder, config, task)

