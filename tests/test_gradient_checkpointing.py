"""train.gradient_checkpointing: each layer runs again in backward (so its activations were not kept),
and the gradients are those of the plain run."""
from __future__ import annotations

import pytest
import torch
from conftest import make_seq2seq_files, seq2seq_recipe_sections, tiny_recipe

import bert_tasks
from bert_tasks.assembly import assemble
from bert_tasks.config import load_config
from bert_tasks.training import enable_gradient_checkpointing


def _gradients(config, checkpointing: bool) -> tuple[dict[str, torch.Tensor], int]:
    torch.manual_seed(0)
    assembly, splits = assemble(config)
    model, task = assembly.model, assembly.task
    if checkpointing:
        enable_gradient_checkpointing(model)
    calls = []
    # inside the first layer: checkpointing wraps a layer's forward, so its parts run again in backward
    inside = next(m for name, m in model.named_modules() if name.endswith("layer.0.attention"))
    inside.register_forward_hook(lambda *_: calls.append(1))
    data = task.encode(splits["train"])
    batch = task.collate([data[i] for i in range(8)])
    model.train()
    loss = task.loss(model(**batch["inputs"]), batch["labels"])
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, len(calls)


@pytest.mark.parametrize("task", ["classification", "seq2seq"])
def test_checkpointed_layers_recompute_and_give_the_same_gradients(tmp_path, tiny_checkpoint_no_dropout, task):
    sections = seq2seq_recipe_sections(make_seq2seq_files(tmp_path)) if task == "seq2seq" else {}
    config = load_config(tiny_recipe(tiny_checkpoint_no_dropout, tmp_path, **sections))
    plain, plain_calls = _gradients(config, False)
    checkpointed, calls = _gradients(config, True)
    assert plain_calls == 1 and calls == 2  # forward, and again in backward
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-6, msg=name)


def test_a_checkpointed_run_trains_to_the_same_numbers(tmp_path, tiny_checkpoint_no_dropout):
    results = []
    for on in (False, True):
        recipe = tiny_recipe(tiny_checkpoint_no_dropout, tmp_path, train={"gradient_checkpointing": on}, output={"name": f"gc-{on}"})
        results.append(bert_tasks.train(load_config(recipe)).eval)
    assert results[1] == pytest.approx(results[0], rel=1e-5)
