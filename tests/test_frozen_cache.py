"""The frozen-work cache (train.cache_frozen): a cached run and an uncached run with frozen-layer
dropout off train to the same losses and weights, for every task and every strategy that leaves a
frozen lower part; the store is reused only when everything that determines it is the same;
killed, damaged, concurrent and short-of-disk builds; the fallbacks and their errors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import (make_ner_files, make_qa_files, make_seq2seq_files, make_tiny_checkpoint, make_tiny_seq2seq_checkpoint,
                      ner_recipe_sections, qa_recipe_sections, seq2seq_recipe_sections, tiny_recipe)
from safetensors.torch import load_file

import bert_tasks
from bert_tasks.checkpointing import checkpoint_dirs
from bert_tasks.config import load_config
from bert_tasks.errors import ConfigError
from bert_tasks.frozen.store import FrozenStore
from bert_tasks.rundir import read_metrics
from bert_tasks.tasks.classification import Classification

TRAIN = {"epochs": 2, "log_every": 1, "max_train_samples": 64, "max_eval_samples": 24}


def _train(checkpoint: Path, root: Path, name: str, strategy: dict, sections: dict | None = None, **train) -> Path:
    sections = dict(sections or {})
    train = {"cache_dir": str(root / "cache"), **train}  # each test its own stores (runs of one test share them)
    recipe = tiny_recipe(checkpoint, root, strategy=strategy, train={**TRAIN, **train}, output={"name": name}, **sections)
    bert_tasks.train(load_config(recipe))
    return root / name


def _losses(run: Path) -> list[float]:
    return [e["loss"] for e in read_metrics(run) if e["event"] in ("train", "eval")]


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint_dirs(run)[-1] / "model.safetensors"))


def _record(run: Path) -> dict:
    return json.loads((run / "frozen_cache.json").read_text())


def assert_same_training(cached: Path, plain: Path, tolerance: float = 1e-6, weights_tolerance: float = 1e-5) -> None:
    """Equal up to float rounding: the stored states were computed in other batch shapes than the
    training batches, so the last bit of a sum can differ; nothing else may. (Adam divides by the
    root of tiny second moments, so a last-bit difference in a near-zero gradient can move a weight
    by ~1e-3 after many steps: the two biases of the QA head show it.)"""
    assert _losses(cached) == pytest.approx(_losses(plain), rel=tolerance, abs=tolerance)
    a, b = _final_weights(cached), _final_weights(plain)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name].float(), b[name].float(), rtol=0, atol=weights_tolerance)


STRATEGY_CASES = {
    "last_n n=2": ({"name": "last_n", "n": 2}, 2, False),
    "head only (last_n n=0)": ({"name": "last_n", "n": 0}, 4, False),
    "frozen layer_mix": ({"name": "layer_mix"}, 4, True),
    "layer_mix, top layer tuned": ({"name": "layer_mix", "encoder": "last_n", "n": 1}, 3, True),
    "bottleneck in the top layer": ({"name": "bottleneck", "last_n": 1}, 3, False),
    "lora in the top 2 layers": ({"name": "lora", "last_n": 2}, 2, False),
}


@pytest.mark.parametrize("case", list(STRATEGY_CASES))
def test_cached_run_trains_like_the_uncached_one(tmp_path, tiny_checkpoint, case):
    strategy, cut, all_states = STRATEGY_CASES[case]
    cached = _train(tiny_checkpoint, tmp_path, "cached", strategy, cache_frozen=True)
    plain = _train(tiny_checkpoint, tmp_path, "plain", strategy, cache_frozen=False, frozen_dropout=False)
    assert_same_training(cached, plain)
    record = _record(cached)
    assert record["cached"] and record["cut"] == cut and record["train"]["how"] == "built"
    assert record["train"]["rows"] == 64 and record["validation"]["rows"] == 24
    summary = json.loads((cached / "summary.json").read_text())
    assert summary["frozen_cache"]["cut"] == cut
    assert ("hidden states" in record["frozen"]) == all_states
    assert not _record(plain)["cached"]


TASK_CASES = {
    "tagging windows": lambda d: ner_recipe_sections(make_ner_files(d)),
    "qa windows": lambda d: qa_recipe_sections(make_qa_files(d)),
    "seq2seq, frozen encoder": lambda d: seq2seq_recipe_sections(make_seq2seq_files(d, train=64, validation=12), max_new_tokens=6, freeze_encoder=True),
}


@pytest.mark.parametrize("case", list(TASK_CASES))
def test_every_task_trains_alike_on_stored_states(tmp_path, tiny_checkpoint, case):
    sections = TASK_CASES[case](tmp_path)
    # seq2seq with a frozen encoder caches the whole encoder whatever the strategy does to the decoder
    strategy = {"name": "full"} if "seq2seq" in case else {"name": "last_n", "n": 1}
    cached = _train(tiny_checkpoint, tmp_path, "cached", strategy, sections, cache_frozen=True)
    plain = _train(tiny_checkpoint, tmp_path, "plain", strategy, sections, cache_frozen=False, frozen_dropout=False)
    assert_same_training(cached, plain, weights_tolerance=2e-3 if "qa" in case else 1e-5)
    assert _record(cached)["cut"] == (4 if "seq2seq" in case else 3)


def test_bf16_cached_run_stays_close(tmp_path, tiny_checkpoint):
    strategy = {"name": "last_n", "n": 1}
    cached = _train(tiny_checkpoint, tmp_path, "cached", strategy, mixed_precision="bf16", cache_frozen=True)
    plain = _train(tiny_checkpoint, tmp_path, "plain", strategy, mixed_precision="bf16", cache_frozen=False, frozen_dropout=False)
    assert _record(cached)["compute_dtype"] in ("bfloat16", "float32")
    assert_same_training(cached, plain, tolerance=2e-3, weights_tolerance=2e-2)


def test_store_is_reused_only_for_the_same_inputs_and_weights(tmp_path, tiny_checkpoint):
    strategy = {"name": "last_n", "n": 1}
    first = _record(_train(tiny_checkpoint, tmp_path, "a", strategy))
    again = _record(_train(tiny_checkpoint, tmp_path, "b", strategy, learning_rate=3e-4, seed=7))  # lr and seed do not matter
    assert first["cached"] and again["train"]["how"] == "reused" and again["train"]["key"] == first["train"]["key"]
    fewer_rows = _record(_train(tiny_checkpoint, tmp_path, "c", strategy, max_train_samples=48))
    assert fewer_rows["train"]["how"] == "built" and fewer_rows["train"]["key"] != first["train"]["key"]
    assert fewer_rows["validation"]["how"] == "reused"  # the same 24 validation rows
    shorter = _record(_train(tiny_checkpoint, tmp_path, "d", strategy, {"task": {"max_length": 12}}))  # other encoding settings
    assert shorter["train"]["how"] == "built" and shorter["train"]["key"] != first["train"]["key"]
    deeper_cut = _record(_train(tiny_checkpoint, tmp_path, "e", {"name": "last_n", "n": 2}))
    assert deeper_cut["train"]["key"] != first["train"]["key"]
    other_weights = make_tiny_checkpoint(tmp_path / "other", seed=1)
    assert _record(_train(other_weights, tmp_path, "f", strategy))["train"]["key"] != first["train"]["key"]


def test_memory_mapped_store_trains_alike(tmp_path, tiny_checkpoint):
    strategy = {"name": "layer_mix"}
    in_memory = _train(tiny_checkpoint, tmp_path, "memory", strategy)
    mapped = _train(tiny_checkpoint, tmp_path, "mapped", strategy, cache_memory_gb=0)
    assert _record(mapped)["train"]["mapped"] and not _record(in_memory)["train"]["mapped"]
    assert _losses(mapped) == _losses(in_memory)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_device_layout_gathers_what_the_host_layout_does(dtype):
    """The GPU layout (one flat tensor indexed on the device, no host round trip) gives the row-by-row
    gather's result exactly, zero padding included; checked on CPU by flattening there."""
    generator = torch.Generator().manual_seed(0)
    lengths = [3, 1, 5, 2, 4, 1, 6]
    shards, offsets = [], []
    for shard in range(2):  # row i lives in shard i % 2
        rows = lengths[shard::2]
        offsets.append(np.cumsum([0, *rows[:-1]]).astype(np.int64))
        shards.append(torch.randn((sum(rows), 2, 4), generator=generator).to(dtype))
    manifest = {"states": 2, "hidden": 4, "bytes": 0}
    host = FrozenStore(shards, offsets, lengths, dtype, torch.float32, manifest, mapped=False)
    flat = FrozenStore([s.clone() for s in shards], offsets, lengths, dtype, torch.float32, manifest, mapped=False)
    flat.flatten(torch.device("cpu"))
    assert flat.flat is not None and flat.shards == []
    for rows in ([6, 0, 3], [1], [5, 2, 4, 1]):
        index = torch.tensor(rows)
        pad_to = max(lengths[r] for r in rows) + 2
        expected = host.gather(index, pad_to, torch.device("cpu"))
        got = flat.gather(index, pad_to, torch.device("cpu"))
        assert got.dtype == torch.float32 and got.shape == (len(rows), pad_to, 2, 4)
        assert torch.equal(got, expected)


def test_cached_run_with_the_device_layout_trains_alike(tmp_path, tiny_checkpoint, monkeypatch):
    """What a GPU whose memory holds the store runs, on CPU: the store flattened where the model is."""
    strategy = {"name": "layer_mix"}
    host = _train(tiny_checkpoint, tmp_path, "host", strategy)
    monkeypatch.setattr(FrozenStore, "place", lambda store, device, budget: store.flatten(device))
    flat = _train(tiny_checkpoint, tmp_path, "flat", strategy)
    assert _losses(flat) == _losses(host)


def test_bfloat16_store_of_a_float32_run(tmp_path, tiny_checkpoint):
    strategy = {"name": "last_n", "n": 0}
    half = _train(tiny_checkpoint, tmp_path, "half", strategy, cache_dtype="bfloat16")
    full = _train(tiny_checkpoint, tmp_path, "full", strategy)
    assert _record(half)["dtype"] == "bfloat16" and _record(half)["train"]["bytes"] * 2 == _record(full)["train"]["bytes"]
    assert _losses(half) == pytest.approx(_losses(full), abs=2e-2)


def test_damaged_and_half_built_stores_are_rebuilt(tmp_path, tiny_checkpoint, capfd):
    strategy = {"name": "last_n", "n": 1}
    reference = _train(tiny_checkpoint, tmp_path, "reference", strategy)
    folder = Path(_record(reference)["train"]["folder"])
    shard = folder / "shard-0.bin"
    shard.write_bytes(shard.read_bytes()[:-8])  # cut short
    building = folder.with_name(f".{folder.name}.building")  # and a killed build's leftovers beside it
    building.mkdir()
    (building / "shard-0.bin").write_bytes(b"half")
    (folder.parent / f"{folder.name}.lock").write_text(json.dumps({"pid": 2**22 + 12345, "host": os.uname().nodename, "started": 0}))
    again = _train(tiny_checkpoint, tmp_path, "again", strategy)
    assert "damaged frozen cache" in capfd.readouterr().err
    assert _record(again)["train"]["how"] == "built" and not building.exists()
    assert _losses(again) == _losses(reference)


def test_short_disk_keeps_a_small_store_in_memory_and_refuses_a_big_one(tmp_path, tiny_checkpoint, capfd):
    strategy = {"name": "last_n", "n": 1}
    run = _train(tiny_checkpoint, tmp_path, "memory", strategy, cache_max_gb=1e-9)
    assert _record(run)["train"]["how"] == "in memory" and "kept in memory for this run only" in capfd.readouterr().err
    with pytest.raises(ConfigError, match=r"train.cache_frozen: the train store cannot be built: it needs .* but train.cache_max_gb allows"):
        _train(tiny_checkpoint, tmp_path, "refused", strategy, cache_max_gb=1e-9, cache_memory_gb=1e-9)
    assert not list((tmp_path / "cache").glob(".*building"))  # nothing half-written left


def test_fallbacks_notice_with_auto_and_fail_with_true(tmp_path, tiny_checkpoint, capfd, monkeypatch):
    with pytest.raises(ConfigError, match="train.cache_frozen=true: strategy 'full' leaves no frozen lower part"):
        _train(tiny_checkpoint, tmp_path, "full", {"name": "full"}, cache_frozen=True)
    with pytest.raises(ConfigError, match="train.cache_frozen=true and train.frozen_dropout=true"):
        load_config(tiny_recipe(tiny_checkpoint, tmp_path, train={"cache_frozen": True, "frozen_dropout": True}))
    run = _train(tiny_checkpoint, tmp_path, "dropout", {"name": "last_n", "n": 1}, frozen_dropout=True)
    assert not _record(run)["cached"] and "train.frozen_dropout=true" in capfd.readouterr().err
    monkeypatch.setattr(Classification, "fixed_inputs", False)  # a task that gives rows new inputs each epoch
    run = _train(tiny_checkpoint, tmp_path, "changing", {"name": "last_n", "n": 1})
    assert not _record(run)["cached"] and "gives a row new inputs every epoch" in capfd.readouterr().err
    with pytest.raises(ConfigError, match="train.cache_frozen=true: task 'classification' gives a row new inputs every epoch"):
        _train(tiny_checkpoint, tmp_path, "changing-true", {"name": "last_n", "n": 1}, cache_frozen=True)


def test_a_strategy_that_touches_its_declared_frozen_part_is_not_cached(tmp_path, tiny_checkpoint, monkeypatch):
    from bert_tasks.strategies.bottleneck import Bottleneck

    monkeypatch.setattr(Bottleneck, "frozen_layers", lambda self, model: 4)  # a wrong declaration: adapters sit in layer 3
    with pytest.raises(ConfigError, match="declares 4 frozen layers, but .* has a hook that changes its output"):
        _train(tiny_checkpoint, tmp_path, "wrong", {"name": "bottleneck", "last_n": 1, "train_layernorm": False}, cache_frozen=True)


def test_architecture_the_split_cannot_reproduce_falls_back(tmp_path, capfd):
    # T5 computes its relative position bias in block 0 and passes it up: a cut above block 0 loses it
    checkpoint = make_tiny_seq2seq_checkpoint(tmp_path / "t5-checkpoint", "t5")
    sections = seq2seq_recipe_sections(make_seq2seq_files(tmp_path, train=32, validation=8), max_new_tokens=4)
    run = _train(checkpoint, tmp_path, "t5", {"name": "last_n", "n": 1}, sections, epochs=1)
    assert not _record(run)["cached"] and "does not reproduce it" in capfd.readouterr().err
    frozen = _train(checkpoint, tmp_path, "t5-frozen", {"name": "full"}, {**sections, "task": {**sections["task"], "freeze_encoder": True}}, epochs=1)
    assert _record(frozen)["cached"] and _record(frozen)["cut"] == 2  # the whole encoder: nothing to reproduce


def _recipe_file(checkpoint: Path, folder: Path, **train) -> Path:
    recipe = tiny_recipe(checkpoint, folder / "runs", strategy={"name": "last_n", "n": 1}, train={**TRAIN, **train})
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _command(*arguments: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, *arguments], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_processes_cache_their_shares_and_match_one(tmp_path, tiny_checkpoint_no_dropout):
    path = _recipe_file(tiny_checkpoint_no_dropout, tmp_path, max_train_samples=90, max_eval_samples=41, eval_every=3, eval_batch_size=32,
                        cache_dir=str(tmp_path / "cache"))
    one = _command("-m", "bert_tasks", "train", str(path), "output.name=one", cwd=tmp_path)
    assert one.wait(600) == 0, one.stderr.read()[-3000:]
    (tmp_path / "cache").rename(tmp_path / "cache-one")  # the 2-process run builds its own two-shard store
    two = _command("-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541", "-m", "bert_tasks", "train", str(path), "output.name=two", cwd=tmp_path)
    assert two.wait(600) == 0, two.stderr.read()[-3000:]
    plain = _command("-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29542", "-m", "bert_tasks", "train", str(path),
                     "output.name=two-plain", "train.cache_frozen=false", "train.frozen_dropout=false", cwd=tmp_path)
    assert plain.wait(600) == 0, plain.stderr.read()[-3000:]
    runs = tmp_path / "runs"
    record = _record(runs / "two")
    assert record["cached"] and record["train"]["how"] == "built"
    assert json.loads((Path(record["train"]["folder"]) / "manifest.json").read_text())["shards"] == 2
    evals = [[e["loss"] for e in read_metrics(runs / name) if e["event"] == "eval"] for name in ("one", "two", "two-plain")]
    assert evals[0] == pytest.approx(evals[1], abs=1e-5) and evals[1] == pytest.approx(evals[2], abs=1e-5)
    one, two, two_plain = (_final_weights(runs / name) for name in ("one", "two", "two-plain"))
    for name in one:
        torch.testing.assert_close(one[name], two[name], rtol=0, atol=1e-5)
        torch.testing.assert_close(two[name], two_plain[name], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_concurrent_runs_share_one_build(tmp_path, tiny_checkpoint):
    path = _recipe_file(tiny_checkpoint, tmp_path, cache_dir=str(tmp_path / "cache"))
    runs = [_command("-m", "bert_tasks", "train", str(path), f"output.name=r{i}", f"train.seed={i}", cwd=tmp_path) for i in range(2)]
    for run in runs:
        assert run.wait(600) == 0, run.stderr.read()[-3000:]
    hows = sorted(_record(tmp_path / "runs" / f"r{i}")["train"]["how"] for i in range(2))
    assert hows == ["built", "reused"]  # the second waited for the first one's build lock, then read its store
    stores = [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]
    assert len([p for p in stores if p.is_dir()]) == 2 and not list((tmp_path / "cache").glob(".*building"))  # train + validation


def test_resumed_cached_run_ends_where_an_uninterrupted_one_does(tmp_path, tiny_checkpoint):
    strategy = {"name": "last_n", "n": 1}
    whole = _train(tiny_checkpoint, tmp_path, "whole", strategy, eval_every=2, save_every=2, keep_checkpoints=0)
    cut_short = _train(tiny_checkpoint, tmp_path, "resumed", strategy, eval_every=2, save_every=2, keep_checkpoints=0, epochs=2)
    # keep only the checkpoint of step 4 (mid-run), as a kill after it would
    for folder in checkpoint_dirs(cut_short)[2:]:
        shutil.rmtree(folder)
    (cut_short / "summary.json").unlink()
    resumed = _train(tiny_checkpoint, tmp_path, "resumed", strategy, eval_every=2, save_every=2, keep_checkpoints=0, resume=True)
    assert _record(resumed)["train"]["how"] == "reused"
    assert _losses(resumed) == _losses(whole)
    a, b = _final_weights(resumed), _final_weights(whole)
    for name in a:
        assert torch.equal(a[name], b[name])


def test_cache_command_lists_and_clears_only_stores(tmp_path, tiny_checkpoint, capsys):
    from bert_tasks.cli import main

    _train(tiny_checkpoint, tmp_path, "run", {"name": "last_n", "n": 1})
    keep = tmp_path / "cache" / "my-notes"
    keep.mkdir()
    (keep / "notes.txt").write_text("not a store")
    capsys.readouterr()
    assert main(["cache", "--dir", str(tmp_path / "cache")]) == 0
    listing = capsys.readouterr().out
    assert "2 stores" in listing and "64 rows" in listing and "24 rows" in listing and "cut at layer 3" in listing
    assert main(["cache", "--dir", str(tmp_path / "cache"), "--clear"]) == 0
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["my-notes"]
