"""Freezing details beyond the task x strategy matrix (tests/test_matrix.py): depth errors, weight decay."""
from __future__ import annotations

import pytest
from conftest import tiny_recipe

from bert_tasks.assembly import assemble
from bert_tasks.config import load_config
from bert_tasks.errors import ConfigError
from bert_tasks.optim import make_optimizer


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


def test_fp16_loss_scaling_gets_the_unfused_optimizer(tmp_path, tiny_checkpoint):
    """A fused AdamW would skip an overflowed fp16 step inside its kernel, unseen by Accelerate's schedule."""
    config = load_config(tiny_recipe(tiny_checkpoint, tmp_path))
    assembly, _ = assemble(config)
    assert make_optimizer(assembly.model, config.train).defaults["fused"]
    assert not make_optimizer(assembly.model, config.train, loss_scaling=True).defaults["fused"]
