"""Which parameters train under each strategy, and that frozen ones never move."""
from __future__ import annotations

import pytest
import torch

from bert_tasks.assembly import assemble
from bert_tasks.config import load_config
from bert_tasks.errors import ConfigError
from bert_tasks.optim import make_optimizer

from conftest import tiny_recipe

LAYERS = 4


def _trainable_prefixes(model) -> set[str]:
    prefixes = set()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            parts = name.split(".")
            prefixes.add(".".join(parts[:4]) if parts[1] == "encoder" else ".".join(parts[:2]))
    return prefixes


@pytest.mark.parametrize(
    "strategy, expected",
    [
        ({"name": "full"}, {"backbone.embeddings", *{f"backbone.encoder.layer.{i}" for i in range(LAYERS)}, "head.pooler", "head.classifier"}),
        ({"name": "last_n", "n": 2}, {"backbone.encoder.layer.2", "backbone.encoder.layer.3", "head.pooler", "head.classifier"}),
        ({"name": "last_n", "n": 0}, {"head.pooler", "head.classifier"}),
    ],
    ids=["full", "last_n=2", "last_n=0"],
)
def test_exactly_the_expected_parameters_train_and_frozen_stay_identical(tmp_path, tiny_checkpoint, strategy, expected):
    config = load_config(tiny_recipe(tiny_checkpoint, tmp_path, strategy=strategy))
    assembly, splits = assemble(config)
    model = assembly.model
    assert _trainable_prefixes(model) == expected
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = make_optimizer(model, config.train)
    data = assembly.task.encode(splits["train"])
    model.train()
    for start in (0, 8, 16):
        batch = assembly.task.collate([data[i] for i in range(start, start + 8)])
        assembly.task.loss(model(**batch["inputs"]), batch["labels"]).backward()
        optimizer.step()
        optimizer.zero_grad()
    params = dict(model.named_parameters())
    for name, before in frozen.items():
        assert torch.equal(params[name], before), f"frozen {name} changed"
        assert params[name].grad is None
    moved = [name for name, before in trainable.items() if not torch.equal(params[name], before)]
    assert len(moved) == len(trainable)


def test_last_n_beyond_depth_is_an_error(tmp_path, tiny_checkpoint):
    config = load_config(tiny_recipe(tiny_checkpoint, tmp_path, strategy={"name": "last_n", "n": 9}))
    with pytest.raises(ConfigError, match="strategy.n=9: the encoder has only 4 layers"):
        assemble(config)


def test_no_weight_decay_on_bias_and_layernorm(tmp_path, tiny_checkpoint):
    config = load_config(tiny_recipe(tiny_checkpoint, tmp_path))
    assembly, _ = assemble(config)
    optimizer = make_optimizer(assembly.model, config.train)
    names = {id(p): n for n, p in assembly.model.named_parameters()}
    decayed = {names[id(p)] for p in optimizer.param_groups[0]["params"]}
    undecayed = {names[id(p)] for p in optimizer.param_groups[1]["params"]}
    assert optimizer.param_groups[1]["weight_decay"] == 0.0
    assert all(n.endswith("bias") or "LayerNorm" in n for n in undecayed)
    assert not any(n.endswith("bias") or "LayerNorm" in n for n in decayed)
    assert "backbone.embeddings.word_embeddings.weight" in decayed
