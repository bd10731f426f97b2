"""Recipes, typed overrides and their one-line errors."""
from __future__ import annotations

import pytest
import yaml

from bert_tasks.cli import main
from bert_tasks.config import list_recipes, load_config, save_config
from bert_tasks.errors import ConfigError


def test_every_bundled_recipe_parses():
    recipes = list_recipes()
    assert len(recipes) >= 16  # demo + 8 GLUE tasks + conll2003 + squad, squad_v2 + samsum + 3 comparisons
    tasks = {"conll2003": "tagging", "squad": "span_qa", "squad_v2": "span_qa", "samsum_bert2bert": "seq2seq", "mlm": "mlm"}
    for path in recipes:
        if path.parent.name == "suite":
            from bert_tasks.suite import load_suite

            assert load_suite(path).tasks  # builds (and so checks) every task's recipe
            continue
        if path.parent.name == "compare":
            from bert_tasks.comparison import load_comparison

            comparison = load_comparison(path)  # builds (and so checks) every cell's run config
            assert len({c.label for c in comparison.cells}) == len(comparison.config.strategies)
            continue
        config = load_config(path)
        assert config.task.name == tasks.get(path.stem, "classification")
        assert config.train.learning_rate > 0


def test_overrides_are_typed_and_reach_plugin_configs():
    config = load_config("glue/sst2", ["train.learning_rate=3e-5", "train.epochs=1", "strategy.name=last_n", "strategy.n=3", "train.eval_every=100", "data.validation=null"])
    assert config.train.learning_rate == pytest.approx(3e-5) and isinstance(config.train.learning_rate, float)
    assert config.train.epochs == 1.0
    assert config.strategy.name == "last_n" and config.strategy.n == 3
    assert config.train.eval_every == 100
    assert config.data.validation is None
    assert config.run_dir.name == "sst2-last_n"


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.learnin_rate=1e-3", "train.learnin_rate: unknown key; allowed keys are"),
        ("train.batch_size=big", "train.batch_size: expected an integer, got 'big'"),
        ("train.mixed_precision=fp8", "train.mixed_precision: expected 'auto' or 'no' or 'bf16' or 'fp16'"),
        ("strategy.name=magic", "strategy.name: unknown strategy 'magic'; choose one of bottleneck, full, last_n, layer_mix, lora"),
        ("strategy.n=2", "strategy.n: unknown key; allowed keys are name"),
        ("modle.checkpoint=x", "modle: unknown section"),
        ("train.warmup_ratio=1.5", "train.warmup_ratio: must be in [0, 1)"),
        ("task.metrics=[pearson]", "task.metrics: 'pearson' is not a single_label metric"),
        ("nodot=1", "expected section.key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError) as error:
        load_config("demo", [override])
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_bad_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: 1\n batch_size: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line \d+: not valid YAML"):
        load_config(path)


def test_resolved_config_round_trips(tmp_path):
    config = load_config("glue/stsb", ["strategy.name=last_n"])
    save_config(config, tmp_path / "config.yaml")
    tree = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert tree["train"]["warmup_ratio"] == 0.1 and tree["strategy"] == {"name": "last_n", "n": 2, "reinit_top": 0}
    assert load_config(tree) == config


def test_cli_prints_one_line_error_and_exits_2(capsys):
    assert main(["train", "demo", "train.epochs=soon"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "bert-tasks: error: train.epochs: expected a number, got 'soon'"


def test_cli_lists_recipes(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "glue/sst2" in out and "demo" in out


def test_yes_no_on_off_stay_strings():
    config = load_config("demo", ["train.mixed_precision=no", "output.name=off"])
    assert config.train.mixed_precision == "no" and config.output.name == "off"
    assert load_config("demo", ["train.resume=true"]).train.resume is True
