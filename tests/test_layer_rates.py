"""train.layer_lr_decay gives each encoder layer's parameter group exactly its rate, through the
schedule; strategy.reinit_top draws the top layers afresh (and only those)."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_recipe

import bert_tasks
from bert_tasks.assembly import assemble
from bert_tasks.backbone import encoder_layers
from bert_tasks.config import load_config
from bert_tasks.errors import ConfigError
from bert_tasks.optim import make_optimizer


def _rates(model, optimizer) -> dict[str, float]:
    rate_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    return {name: rate_of[id(p)] for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("strategy", [{"name": "full"}, {"name": "last_n", "n": 2}, {"name": "lora", "r": 4}])
def test_each_layer_gets_the_rate_above_it_times_the_factor(tmp_path, tiny_checkpoint, strategy):
    config = load_config(tiny_recipe(tiny_checkpoint, tmp_path, strategy=strategy, train={"learning_rate": 1e-3, "layer_lr_decay": 0.5}))
    assembly, _ = assemble(config)
    model = assembly.model
    rates = _rates(model, make_optimizer(model, config.train))
    layers = encoder_layers(model.encoder)  # 4 layers
    layer_of = {id(p): index for index, layer in enumerate(layers) for p in layer.parameters()}
    seen = set()
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if id(parameter) in layer_of:
            expected = 1e-3 * 0.5 ** (len(layers) - 1 - layer_of[id(parameter)])
            seen.add(layer_of[id(parameter)])
        elif "embeddings" in name and name.startswith("backbone"):
            expected = 1e-3 * 0.5 ** len(layers)
        else:  # the head (and the pooler) train at the full rate
            expected = 1e-3
        assert rates[name] == pytest.approx(expected, rel=1e-12), name
    assert seen == ({2, 3} if strategy["name"] == "last_n" else {0, 1, 2, 3})


def test_the_schedule_keeps_the_ratios_and_the_log_shows_the_full_rate(tmp_path, tiny_checkpoint):
    recipe = tiny_recipe(tiny_checkpoint, tmp_path / "runs", train={"learning_rate": 1e-3, "layer_lr_decay": 0.8, "warmup_steps": 2, "log_every": 1})
    bert_tasks.train(load_config(recipe))
    records = [json.loads(line) for line in (tmp_path / "runs" / "run" / "metrics.jsonl").read_text().splitlines()]
    rates = [r["learning_rate"] for r in records if r["event"] == "train"]
    assert rates[0] == pytest.approx(5e-4) and rates[1] == pytest.approx(1e-3)  # warmup 2 steps, at train.learning_rate
    config = load_config(recipe)
    assembly, _ = assemble(config)
    optimizer = make_optimizer(assembly.model, config.train)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.25)
    assert sorted({round(lr / 0.25e-3, 6) for lr in scheduler.get_last_lr()}) == [round(0.8**k, 6) for k in (4, 3, 2, 1, 0)]


def test_bad_decay_is_a_one_line_error(tmp_path, tiny_checkpoint):
    for value in (0.0, 1.5):
        with pytest.raises(ConfigError) as error:
            load_config(tiny_recipe(tiny_checkpoint, tmp_path, train={"layer_lr_decay": value}))
        assert "train.layer_lr_decay" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("strategy", [{"name": "full", "reinit_top": 2}, {"name": "last_n", "n": 3, "reinit_top": 1}])
def test_reinit_top_draws_only_the_top_layers_afresh(tmp_path, tiny_checkpoint, strategy):
    plain, _ = assemble(load_config(tiny_recipe(tiny_checkpoint, tmp_path, strategy={"name": strategy["name"], **({"n": 3} if "n" in strategy else {})})))
    torch.manual_seed(0)
    fresh, _ = assemble(load_config(tiny_recipe(tiny_checkpoint, tmp_path, strategy=strategy)))
    before, after = encoder_layers(plain.model.encoder), encoder_layers(fresh.model.encoder)
    top = len(before) - strategy["reinit_top"]
    for index, (a, b) in enumerate(zip(before, after)):
        same = all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
        assert same == (index < top), index
    dense = next(m for m in after[-1].modules() if isinstance(m, torch.nn.Linear))
    assert torch.all(dense.bias == 0) and dense.weight.std().item() == pytest.approx(0.02, rel=0.3)
    norm = next(m for m in after[-1].modules() if isinstance(m, torch.nn.LayerNorm))
    assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)
    assert torch.equal(plain.model.encoder.embeddings.word_embeddings.weight, fresh.model.encoder.embeddings.word_embeddings.weight)
    assert "reinit_top" in fresh.strategy.describe()


def test_reinit_beyond_the_trained_layers_is_refused(tmp_path, tiny_checkpoint):
    with pytest.raises(ConfigError) as error:
        load_config(tiny_recipe(tiny_checkpoint, tmp_path, strategy={"name": "last_n", "n": 1, "reinit_top": 2}))
    assert "only the 1 layers that train" in str(error.value)
    with pytest.raises(ConfigError):
        assemble(load_config(tiny_recipe(tiny_checkpoint, tmp_path, strategy={"name": "full", "reinit_top": 9})))
