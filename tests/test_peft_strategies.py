"""What each parameter-efficient strategy promises beyond the matrix: identity at start, the
layer-mix formula, LoRA merging, clear errors, parameter groups, small saves and inspect."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from conftest import tiny_recipe
from torch import nn

import bert_tasks
from bert_tasks.assembly import assemble
from bert_tasks.cli import main
from bert_tasks.config import load_config
from bert_tasks.errors import BertTasksError, ConfigError
from bert_tasks.model import TaskModel
from bert_tasks.parameters import parameter_report
from bert_tasks.strategies.bottleneck import Bottleneck, BottleneckConfig
from bert_tasks.strategies.layer_mix import ScalarMix


def _assembled(tmp_path, checkpoint, strategy):
    config = load_config(tiny_recipe(checkpoint, tmp_path, strategy=strategy))
    return assemble(config)


def _logits(assembly, split, count=8):
    data = assembly.task.encode(split)
    batch = assembly.task.collate([data[i] for i in range(count)])
    assembly.model.eval()
    with torch.no_grad():
        return assembly.model(**batch["inputs"])


@pytest.mark.parametrize("placement", ["houlsby", "pfeiffer"])
def test_untrained_adapter_leaves_logits_unchanged(tmp_path, tiny_checkpoint, placement):
    plain, splits = _assembled(tmp_path, tiny_checkpoint, {"name": "full"})
    adapted, _ = _assembled(tmp_path, tiny_checkpoint, {"name": "bottleneck", "placement": placement})
    adapted.model.head.load_state_dict(plain.model.head.state_dict())
    assert len(adapted.model.adapters) == (8 if placement == "houlsby" else 4)
    torch.testing.assert_close(_logits(adapted, splits["validation"]), _logits(plain, splits["validation"]), rtol=0, atol=0)


def test_adapter_size_from_reduction_factor_or_bottleneck_size(tmp_path, tiny_checkpoint):
    by_factor, _ = _assembled(tmp_path, tiny_checkpoint, {"name": "bottleneck", "reduction_factor": 8})
    assert by_factor.model.adapters["layer0_ffn"].down.out_features == 32 // 8
    by_size, _ = _assembled(tmp_path, tiny_checkpoint, {"name": "bottleneck", "bottleneck_size": 3, "activation": "gelu"})
    assert by_size.model.adapters["layer0_ffn"].down.out_features == 3


def test_unsupported_architecture_is_named():
    class OddEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = types.SimpleNamespace(hidden_size=4)
            self.encoder = nn.Module()
            self.encoder.layer = nn.ModuleList([nn.Sequential(nn.Linear(4, 4))])

    model = TaskModel(OddEncoder(), nn.Linear(4, 2))
    with pytest.raises(BertTasksError, match="OddEncoder layers have no ffn output projection .* supported: BERT, RoBERTa, ELECTRA, DistilBERT"):
        Bottleneck(BottleneckConfig()).apply(model)


def test_scalar_mix_matches_numpy_reference():
    torch.manual_seed(0)
    mix = ScalarMix(5)
    with torch.no_grad():
        mix.weights.copy_(torch.tensor([0.3, -1.0, 2.0, 0.0, 0.5]))
        mix.gamma.fill_(1.7)
    layers = [torch.randn(2, 3, 4) for _ in range(5)]
    w = np.exp(mix.weights.detach().numpy())
    w = w / w.sum()
    expected = 1.7 * sum(w[k] * layers[k].numpy() for k in range(5))
    np.testing.assert_allclose(mix.mix(layers).detach().numpy(), expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="4 tensors were passed, but the module mixes 5"):
        mix.mix(layers[:4])


def test_layer_mix_starts_as_an_even_mix_of_every_layer(tmp_path, tiny_checkpoint):
    assembly, _ = _assembled(tmp_path, tiny_checkpoint, {"name": "layer_mix"})
    weights = assembly.strategy.inspect(assembly.model)["layer_weights"]
    assert list(weights) == ["embeddings", "layer 1", "layer 2", "layer 3", "layer 4"]
    assert all(w == pytest.approx(0.2) for w in weights.values())


def test_lora_merge_keeps_the_logits(tmp_path, tiny_checkpoint):
    assembly, splits = _assembled(tmp_path, tiny_checkpoint, {"name": "lora", "r": 4, "dropout": 0.0})
    with torch.no_grad():  # a non-zero update, as after training
        for name, parameter in assembly.model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    before = _logits(assembly, splits["validation"])
    assembly.strategy.merge(assembly.model)
    assert not any("lora_" in name for name, _ in assembly.model.named_parameters())
    torch.testing.assert_close(_logits(assembly, splits["validation"]), before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "strategy, message",
    [
        ({"name": "layer_mix", "n": 2}, "strategy.n: only used with strategy.encoder=last_n"),
        ({"name": "layer_mix", "encoder": "last_n"}, "strategy.n: encoder=last_n needs n"),
        ({"name": "bottleneck", "last_n": 0}, "strategy.last_n: must be 1 or more"),
        ({"name": "bottleneck", "placement": "parallel"}, "strategy.placement: expected 'houlsby' or 'pfeiffer'"),
        ({"name": "lora", "target_modules": ["nonexistent"]}, r"strategy.target_modules=\['nonexistent'\]: not found in the encoder \(BertModel"),
    ],
)
def test_invalid_combinations_are_clear_errors(tmp_path, tiny_checkpoint, strategy, message):
    with pytest.raises(ConfigError, match=message):
        _assembled(tmp_path, tiny_checkpoint, strategy)


def test_bottleneck_top_layers_beyond_depth(tmp_path, tiny_checkpoint):
    with pytest.raises(ConfigError, match="strategy.last_n=7: the encoder has only 4 layers"):
        _assembled(tmp_path, tiny_checkpoint, {"name": "bottleneck", "last_n": 7})


def test_parameter_report_groups(tmp_path, tiny_checkpoint):
    assembly, _ = _assembled(tmp_path, tiny_checkpoint, {"name": "bottleneck"})
    report = parameter_report(assembly.model)
    groups = report["groups"]
    assert {"embeddings", "layer 0", "layer 3", "adapters", "head"} <= set(groups)
    assert sum(g["total"] for g in groups.values()) == report["total"] == sum(p.numel() for p in assembly.model.parameters())
    assert groups["embeddings"]["trainable"] == 0 and groups["adapters"]["trainable"] == groups["adapters"]["total"]


def test_small_save_run_inspect_and_changed_base(tmp_path, tiny_checkpoint, capsys):
    summary = bert_tasks.train(load_config(tiny_recipe(tiny_checkpoint, tmp_path, strategy={"name": "layer_mix"}, train={"max_train_samples": 32})))
    run = tmp_path / "run"
    assert (run / "layer_weights.png").stat().st_size > 1000
    assert (run / "parameters.json").is_file()
    full_bytes = sum(p.numel() * 4 for p in bert_tasks.load(run).model.parameters())
    assert 0 < summary.checkpoint_bytes < full_bytes / 10
    assert main(["inspect", str(run)]) == 0
    out = capsys.readouterr().out
    assert "layer_weights:" in out and "embeddings" in out and "% trainable" in out
    # a small save refuses to load on top of different base weights
    from safetensors.torch import load_file, save_file

    weights = load_file(str(tiny_checkpoint / "model.safetensors"))
    changed = tmp_path / "changed"
    import shutil

    shutil.copytree(tiny_checkpoint, changed)
    key = next(iter(weights))
    weights[key] = weights[key] + 1
    save_file(weights, str(changed / "model.safetensors"))
    config = load_config(tiny_recipe(changed, tmp_path, strategy={"name": "layer_mix"}))
    from bert_tasks.rundir import load_trained

    with pytest.raises(BertTasksError, match="the base weights changed"):
        load_trained(run, config)


class FirstTokenHead(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.out = nn.Linear(hidden, 2)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.out(hidden[:, 0])  # Shape: [batch, 2]


# Where each family keeps its layers, the LayerNorms of a layer, and the attention query/value projections.
FAMILY_LAYOUT = {
    "roberta": (r"backbone\.encoder\.layer\.{i}\.", r"(attention\.output|output)\.LayerNorm", r"attention\.self\.(query|value)"),
    "electra": (r"backbone\.encoder\.layer\.{i}\.", r"(attention\.output|output)\.LayerNorm", r"attention\.self\.(query|value)"),
    "distilbert": (r"backbone\.transformer\.layer\.{i}\.", r"(sa_layer_norm|output_layer_norm)", r"attention\.(q_lin|v_lin)"),
}
# strategy -> the regex of exactly the parameters that train, in a 2-layer stack (filled in per family)
FAMILY_TRAINABLE = {
    "bottleneck": r"adapters\.layer[01]_(ffn|attention)\.(down|up)\.(weight|bias)|{layer01}{norms}\.(weight|bias)|head\.out\.(weight|bias)",
    "last_n": r"{layer1}.*|head\.out\.(weight|bias)",
    "layer_mix": r"features\.(weights|gamma)|head\.out\.(weight|bias)",
    "lora": r"{layer01}{query_value}\.lora_[AB]\.default\.weight|head\.out\.(weight|bias)",
}

FAMILY_TRAINABLE_COUNT = {
    "bottleneck": 2 * 2 * 2 * 2 + 2 * 2 * 2 + 2,  # layers x sites x (down, up) x (weight, bias) + layers x LayerNorms x 2 + head
    "last_n": 16 + 2,  # the top layer's 16 tensors + head
    "layer_mix": 2 + 2,
    "lora": 2 * 2 * 2 + 2,  # layers x (query, value) x (A, B) + head
}


@pytest.mark.parametrize("family", ["roberta", "electra", "distilbert"])
@pytest.mark.parametrize("strategy", [{"name": "bottleneck"}, {"name": "last_n", "n": 1}, {"name": "layer_mix"}, {"name": "lora", "target_modules": ["query", "value", "q_lin", "v_lin"]}],
                         ids=lambda strategy: strategy["name"])
def test_strategies_find_their_modules_in_other_encoder_families(family, strategy):
    """Structure, not names from BERT: in RoBERTa, ELECTRA and DistilBERT layouts exactly the
    expected parameters train, and exactly those get gradients (the injected modules are in the graph)."""
    import re

    from transformers import AutoConfig, AutoModel

    from bert_tasks.config import build_dataclass
    from bert_tasks.registry import STRATEGIES

    sizes = {"distilbert": dict(dim=32, n_layers=2, n_heads=4, hidden_dim=37)}.get(
        family, dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
    )
    if family == "electra":
        sizes["embedding_size"] = 32
    backbone = AutoModel.from_config(AutoConfig.for_model(family, vocab_size=99, **sizes))
    hidden = backbone.config.hidden_size if hasattr(backbone.config, "hidden_size") else backbone.config.dim
    model = TaskModel(backbone, FirstTokenHead(hidden))
    config = build_dataclass(STRATEGIES.config_class(strategy["name"]), strategy, "strategy")
    STRATEGIES.build(config).apply(model)
    ids = torch.randint(5, 99, (2, 7))
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids))
    logits.sum().backward()
    assert logits.shape == (2, 2)
    layer, norms, query_value = FAMILY_LAYOUT[family]
    pattern = FAMILY_TRAINABLE[strategy["name"]].format(layer01=layer.format(i="[01]"), layer1=layer.format(i="1"), norms=norms, query_value=query_value)
    names = [name for name, _ in model.named_parameters()]
    expected = {name for name in names if re.fullmatch(pattern, name)}
    assert {name for name, p in model.named_parameters() if p.requires_grad} == expected
    assert {name for name, p in model.named_parameters() if p.grad is not None} == expected
    assert len(expected) == FAMILY_TRAINABLE_COUNT[strategy["name"]]  # injected modules exist in every layer, not just match
