"""Cheaper training steps: the top layer computed for [CLS] alone when the head reads nothing else
(exact), and train.fast_dropout's masks (opt-in; a different random stream)."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_recipe
from torch import nn

import bert_tasks
from bert_tasks.assembly import assemble
from bert_tasks.backbone import encoder_layers
from bert_tasks.config import load_config
from bert_tasks.fast_dropout import FastDropout, _attention_with_fast_dropout, keep_mask, use_fast_dropout
from bert_tasks.first_token_top import first_token_top, trimmable_top_layer
from bert_tasks.training import enable_gradient_checkpointing

STRATEGIES = {
    "full": {"name": "full"},
    "last_n": {"name": "last_n", "n": 2},
    "bottleneck": {"name": "bottleneck", "reduction_factor": 4},
    "lora": {"name": "lora", "r": 4, "dropout": 0.0},  # no random numbers drawn: both ways see the same network
}


def _batch(model_input_size: int = 100) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, model_input_size, (4, 11), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # padded rows: the [CLS] query must ignore their keys
    mask[3, 3:] = 0
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def _top_layer_widths(model: nn.Module) -> list[int]:
    """Sequence widths the top layer's feed-forward block saw, one per forward."""
    widths: list[int] = []
    layer = encoder_layers(model.encoder)[-1]
    layer.intermediate.register_forward_hook(lambda module, args, out: widths.append(args[0].shape[1]))
    return widths


def _assembled(checkpoint, tmp_path, strategy: dict, **task):
    config = load_config(tiny_recipe(checkpoint, tmp_path, strategy=strategy, task={"name": "classification", "max_length": 32, **task}))
    assembly, _ = assemble(config)
    return assembly.model


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_the_cls_head_gets_the_same_logits_and_gradients_from_a_trimmed_top_layer(tmp_path, tiny_checkpoint_no_dropout, strategy):
    model = _assembled(tiny_checkpoint_no_dropout, tmp_path, STRATEGIES[strategy])
    batch = _batch(model.encoder.config.vocab_size)
    assert model.reads_first_token_only()
    widths = _top_layer_widths(model)
    model.train()
    trimmed = model(**batch)
    trimmed.sum().backward()
    trimmed_grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    model.head.reads_first_token_only = False  # the whole top layer, as before
    whole = model(**batch)
    whole.sum().backward()
    assert widths == [1, 11]  # trimmed: the [CLS] position only; whole: every position
    torch.testing.assert_close(trimmed, whole, rtol=0, atol=1e-6)
    whole_grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert trimmed_grads.keys() == whole_grads.keys() and trimmed_grads  # the same parameters learn
    for name, grad in whole_grads.items():
        torch.testing.assert_close(trimmed_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_trimming_holds_for_either_attention_implementation(tmp_path, tiny_checkpoint_no_dropout, attention):
    model = _assembled(tiny_checkpoint_no_dropout, tmp_path, {"name": "full"})
    model.encoder.config._attn_implementation = attention
    model.eval()
    batch = _batch(model.encoder.config.vocab_size)
    with torch.no_grad():
        trimmed = model(**batch)
        model.head.reads_first_token_only = False
        torch.testing.assert_close(trimmed, model(**batch), rtol=0, atol=1e-6)


def test_what_reads_more_than_cls_runs_the_whole_top_layer(tmp_path, tiny_checkpoint_no_dropout):
    mean = _assembled(tiny_checkpoint_no_dropout, tmp_path / "mean", {"name": "full"}, pooling="mean")
    mixed = _assembled(tiny_checkpoint_no_dropout, tmp_path / "mix", {"name": "layer_mix"})
    for model in (mean, mixed):
        assert not model.reads_first_token_only()
        widths = _top_layer_widths(model)
        model(**_batch(model.encoder.config.vocab_size))
        assert widths == [11]
    checkpointed = _assembled(tiny_checkpoint_no_dropout, tmp_path / "ckpt", {"name": "full"})
    enable_gradient_checkpointing(checkpointed)
    with first_token_top(checkpointed.encoder) as trimmed:  # backward recomputes the layer after the context closed
        assert not trimmed
    assert trimmable_top_layer(nn.Linear(2, 2)) is None  # no layer stack we know: nothing trimmed


def test_look_alike_layers_with_another_order_of_operations_run_whole():
    """RoBERTa-PreLayerNorm has BERT's attribute names but normalises before attention: trimming it
    would skip that LayerNorm, so only BERT's own layer classes are trimmed."""
    from transformers import BertConfig, BertModel, RobertaPreLayerNormConfig, RobertaPreLayerNormModel

    sizes = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32, "vocab_size": 50}
    assert trimmable_top_layer(BertModel(BertConfig(**sizes))) is not None
    assert trimmable_top_layer(RobertaPreLayerNormModel(RobertaPreLayerNormConfig(**sizes))) is None


def test_a_training_run_with_a_trimmed_top_layer_matches_the_whole_one(tmp_path, tiny_checkpoint_no_dropout, monkeypatch):
    """Without dropout no random numbers are drawn in the layer, so a whole run is the same."""
    sections = {"train": {"epochs": 2, "max_train_samples": 48}}
    trimmed = bert_tasks.train(load_config(tiny_recipe(tiny_checkpoint_no_dropout, tmp_path / "a", **sections)))
    monkeypatch.setattr("bert_tasks.model.TaskModel.reads_first_token_only", lambda self: False)
    whole = bert_tasks.train(load_config(tiny_recipe(tiny_checkpoint_no_dropout, tmp_path / "b", **sections)))
    assert trimmed.eval["loss"] == pytest.approx(whole.eval["loss"], rel=1e-5)
    assert trimmed.eval["accuracy"] == whole.eval["accuracy"]


# ---- train.fast_dropout ------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.1, 0.5])
def test_fast_masks_drop_at_the_rate_asked(p):
    torch.manual_seed(0)
    n = 1_000_000
    dropped = 1 - keep_mask(torch.Size([1000, 1000]), p, torch.device("cpu")).float().mean().item()
    assert abs(dropped - p) < 5 * math.sqrt(p * (1 - p) / n)  # within 5 sigma of a binomial
    row = keep_mask(torch.Size([1, 7]), p, torch.device("cpu"))  # sizes not a multiple of 4 numbers per draw
    assert row.shape == (1, 7) and row.dtype == torch.bool
    # each of the four 16-bit numbers of a 64-bit draw, the one holding its top bit included, drops at p
    lanes = keep_mask(torch.Size([n]), p, torch.device("cpu")).view(-1, 4)
    for lane in range(4):
        dropped = 1 - lanes[:, lane].float().mean().item()
        assert abs(dropped - p) < 5 * math.sqrt(p * (1 - p) / (n / 4)), lane


def test_fast_dropout_scales_kept_values_and_routes_gradients_through_them():
    torch.manual_seed(0)
    dropout = FastDropout(0.25)
    inputs = torch.randn(8, 5, 16, requires_grad=True)
    out = dropout(inputs)
    kept = out != 0
    torch.testing.assert_close(out[kept], inputs[kept] / 0.75)
    out.sum().backward()
    torch.testing.assert_close(inputs.grad, kept.float() / 0.75)
    dropout.eval()
    assert dropout(inputs) is inputs or torch.equal(dropout(inputs), inputs)


def test_fast_dropout_draws_from_the_seeded_generator():
    dropout = FastDropout(0.1)
    inputs = torch.ones(64, 64)
    torch.manual_seed(3)
    first = dropout(inputs)
    torch.manual_seed(3)
    assert torch.equal(first, dropout(inputs))  # checkpointed generator state -> exact resume
    assert not torch.equal(first, dropout(inputs))


@pytest.mark.parametrize("boolean_mask", [True, False])
def test_fast_attention_dropout_is_the_stock_attention_when_nothing_is_dropped(boolean_mask):
    """p so small that no 16-bit draw falls under it: the attention must then equal SDPA without dropout,
    padding mask included (bool or additive)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(0)
    module = nn.Module()
    module.dropout = FastDropout(1e-9)
    module.is_causal = False
    query, key, value = (torch.randn(2, 4, 6, 8) for _ in range(3))  # Shape: [batch, heads, seq, head]
    keep = torch.ones(2, 1, 6, 6, dtype=torch.bool)
    keep[1, :, :, 4:] = False
    mask = keep if boolean_mask else torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)
    attention = _attention_with_fast_dropout(sdpa_attention_forward)
    ours, _ = attention(module, query, key, value, mask, dropout=1e-9, scaling=0.3)
    stock, _ = sdpa_attention_forward(module, query, key, value, mask, dropout=0.0, scaling=0.3)
    torch.testing.assert_close(ours, stock, rtol=1e-5, atol=1e-6)


def test_fast_attention_dropout_leaves_causal_attention_to_transformers():
    """A decoder's self-attention may get no mask and rely on is_causal: position 0 must not see later
    keys, with the same seed the same masks, whatever later positions hold."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    module = nn.Module()
    module.dropout = FastDropout(0.5)
    module.is_causal = True
    query, key, value = (torch.randn(1, 2, 5, 8) for _ in range(3))  # Shape: [batch, heads, seq, head]
    attention = _attention_with_fast_dropout(sdpa_attention_forward)
    torch.manual_seed(0)
    first, _ = attention(module, query, key, value, None, dropout=0.5, scaling=0.3)
    key[:, :, 1:], value[:, :, 1:] = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8)
    torch.manual_seed(0)
    changed, _ = attention(module, query, key, value, None, dropout=0.5, scaling=0.3)
    torch.testing.assert_close(first[:, 0], changed[:, 0])  # Shape: [batch, heads, head]


def test_a_fast_dropout_run_swaps_every_dropout_and_trains(tmp_path, tiny_checkpoint):
    config = load_config(tiny_recipe(tiny_checkpoint, tmp_path, train={"fast_dropout": True, "max_train_samples": 48}))
    assembly, _ = assemble(config)
    assert use_fast_dropout(assembly.model) > 0
    assert not [m for m in assembly.model.modules() if type(m) is nn.Dropout]
    first = bert_tasks.train(config)
    again = bert_tasks.train(load_config(tiny_recipe(tiny_checkpoint, tmp_path, train={"fast_dropout": True, "max_train_samples": 48},
                                                     output={"name": "again"})))
    stock = bert_tasks.train(load_config(tiny_recipe(tiny_checkpoint, tmp_path, train={"max_train_samples": 48}, output={"name": "stock"})))
    assert first.eval["loss"] == again.eval["loss"]  # seeded: the same run twice
    assert first.eval["loss"] != stock.eval["loss"]  # another random stream than the stock dropout's
