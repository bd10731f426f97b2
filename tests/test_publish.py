"""bert-tasks publish: every task x strategy exports, reloads with identical outputs, and carries a
model card whose metadata parses and whose model-index holds the run's metrics."""
from __future__ import annotations

import pytest
import torch
import yaml
from conftest import tiny_recipe
from test_matrix import STRATEGY_CASES, TASK_CASES
import torch.nn.functional as F
from transformers import (AutoModelForPreTraining, AutoModelForQuestionAnswering, AutoModelForSequenceClassification, AutoModelForTokenClassification,
                          EncoderDecoderModel, pipeline)

import bert_tasks
from bert_tasks.assembly import assemble
from bert_tasks.cli import main
from bert_tasks.config import load_config
from bert_tasks.publishing import EXPORT_FILE, publish
from bert_tasks.rundir import BEST_DIR, save_weights, write_run_files
from bert_tasks.summary import RunSummary

STOCK = {"classification": AutoModelForSequenceClassification, "tagging": AutoModelForTokenClassification,
         "span_qa": AutoModelForQuestionAnswering, "seq2seq": EncoderDecoderModel, "mlm": AutoModelForPreTraining}
CASES = [(task, label) for task in TASK_CASES for label in ("full", "last_n", "bottleneck", "layer_mix", "lora")]


def _finished_run(tmp_path, checkpoint, task, label):
    """A run directory as training leaves it, with every trainable weight moved off its initial value."""
    strategy = STRATEGY_CASES[label][0]
    config = load_config(tiny_recipe(checkpoint, tmp_path, strategy=strategy, **TASK_CASES[task](tmp_path)))
    assembly, splits = assemble(config)
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in assembly.model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.05)
    run_dir = tmp_path / "run"
    write_run_files(run_dir, config, assembly.task.state_dict())
    save_weights(run_dir / BEST_DIR, assembly, assembly.model)
    metrics = {name: 0.5 + 0.01 * i for i, name in enumerate(assembly.task.metric_names)} | {"loss": 1.25}
    summary = RunSummary(str(run_dir), task, assembly.strategy.describe(), assembly.task.metric_names[0], metrics[assembly.task.metric_names[0]],
                         7, eval=metrics, trainable_parameters=10, total_parameters=100, steps=7)
    summary.save(run_dir)
    data = assembly.task.encode(splits["validation"])
    return run_dir, summary, assembly, data


@pytest.mark.parametrize("task, label", CASES, ids=[f"{t}-{s}" for t, s in CASES])
def test_publish_reload_parity(tmp_path, tiny_checkpoint, task, label):
    run_dir, summary, assembly, data = _finished_run(tmp_path, tiny_checkpoint, task, label)
    out = tmp_path / "published"
    export = publish(run_dir, out)
    expected_format = "transformers" if label in ("full", "last_n", "lora") else "bert_tasks"
    assert export.format == expected_format, export.reason

    original, reloaded = bert_tasks.load(run_dir), bert_tasks.load(out)
    batch = original.task.collate([data[i] for i in range(6)])
    merged = label == "lora"  # folding B A into W changes the arithmetic slightly
    with torch.no_grad():
        ours = original.task.predict_step(original.model, batch)
        torch.testing.assert_close(reloaded.task.predict_step(reloaded.model, batch), ours, rtol=0, atol=1e-4 if merged else 0)
        if expected_format == "transformers":
            stock = STOCK[task].from_pretrained(str(out)).eval()
            inputs = batch["inputs"]
            if task == "mlm":
                torch.testing.assert_close(_pretraining_stats(stock, inputs), ours, rtol=0, atol=1e-4)
            elif task == "seq2seq":
                generated = stock.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], **original.task.generation_options)
                ours_generated = ours[:, 2:].long()
                width = generated.shape[1] - 1
                assert torch.equal(generated[:, 1:], ours_generated[:, :width])
            else:
                logits = stock(**inputs)
                theirs = torch.stack([logits.start_logits, logits.end_logits], -1) if task == "span_qa" else logits.logits
                real = ours > -1e3  # our QA head masks padding and question tokens; the stock one leaves that to decoding
                torch.testing.assert_close(theirs[real], ours[real], rtol=0, atol=1e-4)

    # the card: YAML metadata that parses, model-index = the run's metrics
    text = (out / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["base_model"] == str(tiny_checkpoint) and meta["license"] == "apache-2.0"
    assert meta["library_name"] == ("transformers" if expected_format == "transformers" else "bert_tasks")
    assert meta["pipeline_tag"] and {"base_model", "metrics", "model-index"} <= set(meta)
    reported = {m["type"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert reported == pytest.approx(summary.eval)
    for needed in (task, summary.strategy, "learning rate", "How to load"):
        assert needed in text
    for name in ("tokenizer.json", "config.json", "training_config.yaml", "task.json", "metrics.json", EXPORT_FILE):
        assert (out / name).is_file(), name
    if expected_format == "bert_tasks":
        assert not (out / "model.safetensors").exists() and (out / "base.json").is_file()


def _pretraining_stats(stock, inputs: dict) -> torch.Tensor:
    """What our masked-LM task reports per row ([summed NLL, predicted, correct, SOP logits]), from a stock
    ...ForPreTraining scoring every position."""
    labels = inputs["mlm_labels"]
    out = stock(**{k: v for k, v in inputs.items() if k != "mlm_labels"})
    logits = out.prediction_logits  # Shape: (batch, seq, vocab)
    nll = F.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")  # Shape: (batch, seq)
    predicted = labels >= 0
    correct = (logits.argmax(-1) == labels) & predicted
    sums = torch.stack([(nll * predicted).sum(1), predicted.sum(1).float(), correct.sum(1).float()], dim=1)
    return torch.cat([sums, out.seq_relationship_logits], dim=1)


def test_classification_export_runs_in_a_stock_pipeline(tmp_path, tiny_checkpoint):
    run_dir, _, _, _ = _finished_run(tmp_path, tiny_checkpoint, "classification", "full")
    out = tmp_path / "published"
    publish(run_dir, out)
    texts = ["the staff were friendly and quick", "it broke after two days", "fine"]
    ours = bert_tasks.load(run_dir).predict(texts)
    theirs = pipeline("text-classification", model=str(out), tokenizer=str(out), top_k=None)(texts)
    for mine, stock in zip(ours, theirs):
        scores = {entry["label"]: entry["score"] for entry in stock}
        assert max(scores, key=scores.get) == mine["label"]
        assert scores == pytest.approx(mine["scores"], abs=1e-5)


def test_publish_errors_are_one_line(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    run_dir, _, _, _ = _finished_run(tmp_path, tiny_checkpoint, "classification", "bottleneck")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    capsys.readouterr()
    assert main(["publish", str(run_dir), "--out", str(tmp_path / "out"), "--push", "someone/tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bert-tasks: error: --push someone/tiny: upload failed") and "\n" not in err
    assert (tmp_path / "out" / "README.md").is_file()  # the folder is written even when the upload fails
    assert main(["publish", str(run_dir), "--out", str(tmp_path / "out")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err


@pytest.mark.parametrize("task", list(TASK_CASES))
def test_stock_export_is_built_on_the_models_device(tmp_path, tiny_checkpoint, task):
    """The stock model publishing builds lives where the trained model does (a GPU for most users;
    the meta device stands in for it here: a CPU-built copy would show up as 'cpu')."""
    config = load_config(tiny_recipe(tiny_checkpoint, tmp_path, **TASK_CASES[task](tmp_path)))
    assembly, _ = assemble(config)
    assembly.model.to("meta")
    stock, reason = assembly.task.to_stock(assembly.model)
    assert stock is not None, reason
    assert {p.device.type for p in stock.parameters()} == {"meta"}
