"""Every registered task x every registered strategy on a tiny in-code BERT.

Adding a task or a strategy? Add one line to TASK_CASES or STRATEGY_CASES: the first test
fails until you do, so no plug-in goes untested.
"""
from __future__ import annotations

import re

import pytest
import torch
from conftest import make_ner_files, make_qa_files, make_seq2seq_files, ner_recipe_sections, qa_recipe_sections, seq2seq_recipe_sections, tiny_recipe

from bert_tasks.assembly import assemble
from bert_tasks.config import load_config
from bert_tasks.optim import make_optimizer
from bert_tasks.registry import STRATEGIES, TASKS
from bert_tasks.rundir import BEST_DIR, load_trained, save_weights, write_run_files

# task name -> recipe sections for tiny data written into a folder
TASK_CASES = {
    "classification": lambda folder: {"task": {"name": "classification", "max_length": 32}},
    "tagging": lambda folder: ner_recipe_sections(make_ner_files(folder)),
    "span_qa": lambda folder: qa_recipe_sections(make_qa_files(folder, unanswerable=0.2), version_2=True),
    "seq2seq": lambda folder: seq2seq_recipe_sections(make_seq2seq_files(folder)),
    # SOP, so the pooler trains too and every head.* weight has a gradient
    "mlm": lambda folder: {"task": {"name": "mlm", "max_length": 32, "sentence_objective": "sop", "rows_per_document": 4}},
}

HEAD = r"head\..*"
LAYER_NORMS = r"backbone\.encoder\.layer\.{layers}\.(attention\.output|output)\.LayerNorm\..*"
# strategy label -> (strategy section, regex that matches exactly the parameter names that train)
STRATEGY_CASES = {
    "full": ({"name": "full"}, r".*"),
    "last_n": ({"name": "last_n", "n": 2}, rf"backbone\.encoder\.layer\.[23]\..*|{HEAD}"),
    "last_n-0 (head only)": ({"name": "last_n", "n": 0}, HEAD),
    "bottleneck": ({"name": "bottleneck", "reduction_factor": 4}, rf"adapters\.layer[0-3]_(ffn|attention)\..*|{LAYER_NORMS.format(layers='[0-3]')}|{HEAD}"),
    "bottleneck-pfeiffer-top2": (
        {"name": "bottleneck", "placement": "pfeiffer", "last_n": 2, "train_layernorm": False}, rf"adapters\.layer[23]_ffn\..*|{HEAD}"
    ),
    "layer_mix": ({"name": "layer_mix"}, rf"features\.(weights|gamma)|{HEAD}"),
    "layer_mix-last1": ({"name": "layer_mix", "encoder": "last_n", "n": 1}, rf"features\..*|backbone\.encoder\.layer\.3\..*|{HEAD}"),
    "lora": ({"name": "lora", "r": 4}, rf"backbone\.encoder\.layer\.[0-3]\.attention\.self\.(query|value)\.lora_[AB]\.default\.weight|{HEAD}"),
}

# BERT2BERT: the same strategies reach into both stacks; what the warm start adds (cross-attention,
# the LM head's transform and bias) always trains, and the task has no separate head.
ENCODER, DECODER = r"backbone\.encoder\.encoder\.layer", r"backbone\.decoder\.bert\.encoder\.layer"
FRESH = rf"{DECODER}\.[0-3]\.crossattention\..*|backbone\.decoder\.cls\.predictions\..*"
STACK_NORMS = rf"({ENCODER}|{DECODER})\.[0-3]\.(attention\.output|output)\.LayerNorm\..*"
SEQ2SEQ_TRAINABLE = {
    "full": r".*",
    "last_n": rf"({ENCODER}|{DECODER})\.[23]\..*|{FRESH}",
    "last_n-0 (head only)": FRESH,
    "bottleneck": rf"adapters\.(decoder_)?layer[0-3]_(ffn|attention)\..*|{STACK_NORMS}|{FRESH}",
    "bottleneck-pfeiffer-top2": rf"adapters\.(decoder_)?layer[23]_ffn\..*|{FRESH}",
    "layer_mix": rf"features\.(weights|gamma)|{FRESH}",
    "layer_mix-last1": rf"features\..*|({ENCODER}|{DECODER})\.3\..*|{FRESH}",
    "lora": rf"({ENCODER}|{DECODER})\.[0-3]\.(attention|crossattention)\.self\.(query|value)\.lora_[AB]\.default\.weight|{FRESH}",
}
CASES = [(task, label) for task in TASK_CASES for label in STRATEGY_CASES]


def _shipped(registry) -> set[str]:
    """Plug-ins of the package itself (tests may register their own, e.g. tests/plugins/)."""
    return {name for name in registry.names() if registry.plugin_class(name).__module__.startswith("bert_tasks.")}


def test_every_registered_plugin_is_in_the_matrix():
    assert _shipped(TASKS) <= set(TASK_CASES), "add the new task to TASK_CASES"
    assert set(SEQ2SEQ_TRAINABLE) == set(STRATEGY_CASES), "add the new strategy to SEQ2SEQ_TRAINABLE"
    assert _shipped(STRATEGIES) <= {case[0]["name"] for case in STRATEGY_CASES.values()}, "add the new strategy to STRATEGY_CASES"


@pytest.mark.parametrize("task, label", CASES, ids=[f"{t}-{s}" for t, s in CASES])
def test_task_strategy(tmp_path, tiny_checkpoint, task, label):
    strategy, trainable_pattern = STRATEGY_CASES[label]
    if task == "seq2seq":
        trainable_pattern = SEQ2SEQ_TRAINABLE[label]
    config = load_config(tiny_recipe(tiny_checkpoint, tmp_path, strategy=strategy, **TASK_CASES[task](tmp_path)))
    assembly, splits = assemble(config)
    model = assembly.model

    # exactly the expected parameters train
    names = {name: p.requires_grad for name, p in model.named_parameters()}
    expected = {name for name in names if re.fullmatch(trainable_pattern, name)}
    assert {name for name, trains in names.items() if trains} == expected
    assert expected and (task == "seq2seq" or any(name.startswith("head.") for name in expected))

    # forward and backward; frozen parameters stay bit-identical over optimiser steps
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = make_optimizer(model, config.train)
    data = assembly.task.encode(splits["train"])
    model.train()
    for start in (0, 8, 16):
        batch = assembly.task.collate([data[i] for i in range(start, start + 8)])
        loss = assembly.task.loss(model(**batch["inputs"]), batch["labels"])
        loss.backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
        optimizer.step()
        optimizer.zero_grad()
    params = dict(model.named_parameters())
    for name, value in frozen.items():
        assert torch.equal(params[name], value), f"frozen {name} changed"
    assert all(not torch.equal(params[name], value) for name, value in before.items())

    # save -> load -> identical logits
    run_dir = tmp_path / "saved"
    write_run_files(run_dir, config, assembly.task.state_dict())
    save_weights(run_dir / BEST_DIR, assembly, model)
    _, loaded = load_trained(run_dir)
    model.eval()
    batch = assembly.task.collate([data[i] for i in range(8)])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(**batch["inputs"]), model(**batch["inputs"]), rtol=0, atol=0)
    if assembly.strategy.small_save:
        assert not (run_dir / BEST_DIR / "model.safetensors").exists()
        assert (run_dir / BEST_DIR / "base.json").is_file()
