"""Two processes (torchrun, gloo on CPU) end with the same metrics as one at the same global batch."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import DEMO_DATA, make_ner_files, make_seq2seq_files, metric_records, ner_recipe_sections, seq2seq_recipe_sections, tiny_recipe
from safetensors.torch import load_file

from bert_tasks.checkpointing import checkpoint_dirs
from bert_tasks.rundir import read_metrics


def _run(command: list[str], cwd) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classification", "classification-arrow", "tagging", "seq2seq", "mlm", "mlm-stream"])
def test_two_processes_match_one(tmp_path, tiny_checkpoint_no_dropout, task):
    # tagging: per-token outputs of different lengths on each process are padded, gathered and trimmed;
    # seq2seq: generated ids of different lengths likewise, and the loss is summed over target tokens
    sections = {
        "tagging": lambda: ner_recipe_sections(make_ner_files(tmp_path)),
        "seq2seq": lambda: seq2seq_recipe_sections(make_seq2seq_files(tmp_path), max_new_tokens=8),
        # masks drawn per (seed, epoch, row) and fixed evaluation masks: the same on either process; NSP
        # negatives and segment packing are seeded by task.corpus_seed
        "mlm": lambda: {"task": {"name": "mlm", "max_length": 32, "sentence_objective": "nsp"}},
        # streamed rows: the main process reads the stream, Accelerate hands each process its share
        # both processes build the same Arrow store at once: the first rename wins, the other uses it
        "classification-arrow": lambda: {"data": {"dataset": None, "train": str(DEMO_DATA / "train.csv"), "validation": str(DEMO_DATA / "validation.csv"),
                                                  "storage": "arrow", "cache_dir": str(tmp_path / "stores")}},
        "mlm-stream": lambda: {"task": {"name": "mlm", "max_length": 32, "sentence_objective": "nsp"}, "data": {"streaming": True}},
    }.get(task, dict)()
    recipe = tiny_recipe(
        tiny_checkpoint_no_dropout, tmp_path / "runs",
        # 90 rows / global batch 16 = 6 steps per epoch, the last one short: Accelerate tops it up with
        # copies for the second process, which must not count. The 41 evaluation rows do not divide
        # evenly by 2 x 32 either, so gather_for_metrics has to drop the padding it added.
        train={"epochs": 2, "eval_every": 3, "eval_batch_size": 32, "max_train_samples": 90, "max_eval_samples": 41},
        **sections,
    )
    if task == "mlm-stream":
        recipe["train"]["max_steps"] = 12
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    _run([sys.executable, "-m", "bert_tasks", "train", str(path), "output.name=one"], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533", "-m", "bert_tasks", "train", str(path), "output.name=two"], tmp_path)
    one, two = (tmp_path / "runs" / name for name in ("one", "two"))
    evals_one = [e for e in read_metrics(one) if e["event"] == "eval"]
    evals_two = [e for e in read_metrics(two) if e["event"] == "eval"]
    assert [e["step"] for e in evals_one] == [e["step"] for e in evals_two]
    if task.startswith("classification"):
        assert [e["step"] for e in evals_one] == [3, 6, 9, 12]
    if task == "classification-arrow":
        assert sorted(p.name.split("-")[0] for p in (tmp_path / "stores").iterdir()) == ["encoded", "raw"]  # one of each, no partial left
    assert [e for e in read_metrics(two) if e["event"] == "start"][0]["processes"] == 2
    for a, b in zip(evals_one, evals_two):
        assert a.get("accuracy", 0.0) == pytest.approx(b.get("accuracy", 0.0), abs=0.01)
        assert a.get("rougeL", 0.0) == pytest.approx(b.get("rougeL", 0.0), abs=2.0)
        # near-ties of an early model may flip one tag (different padding shapes round differently)
        assert a.get("f1", 0.0) == pytest.approx(b.get("f1", 0.0), abs=0.02)
        assert a.get("perplexity", 0.0) == pytest.approx(b.get("perplexity", 0.0), rel=1e-4)
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    weights_one = load_file(str(checkpoint_dirs(one)[-1] / "model.safetensors"))
    weights_two = load_file(str(checkpoint_dirs(two)[-1] / "model.safetensors"))
    for name in weights_one:
        torch.testing.assert_close(weights_one[name], weights_two[name], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_two_processes_resume_to_the_same_weights(tmp_path, tiny_checkpoint):
    """With dropout on, each process's generators are saved and restored: a 2-process run cut back
    to a mid-epoch checkpoint and resumed on 2 processes ends bit for bit where it ended."""
    import shutil

    recipe = tiny_recipe(tiny_checkpoint, tmp_path / "runs", train={"epochs": 2, "eval_every": 2, "keep_checkpoints": 0, "max_train_samples": 80})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29534", "-m", "bert_tasks", "train", str(path)]
    _run([*torchrun, "output.name=whole"], tmp_path)
    whole, cut = tmp_path / "runs" / "whole", tmp_path / "runs" / "cut"
    shutil.copytree(whole, cut)
    for folder in checkpoint_dirs(cut)[1:]:  # keep step 2 of 5 per epoch
        shutil.rmtree(folder)
    (cut / "summary.json").unlink()
    _run([*torchrun, "output.name=cut", "train.resume=true"], tmp_path)
    assert metric_records(cut) == metric_records(whole)
    for name in ("best/model.safetensors", f"checkpoints/{checkpoint_dirs(whole)[-1].name}/model.safetensors"):
        a, b = load_file(str(whole / name)), load_file(str(cut / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.slow
def test_the_multi_node_command_trains_like_one_process(tmp_path, tiny_checkpoint_no_dropout):
    """The README's two-machine torchrun command, with both "machines" on this one (node ranks 0 and 1,
    one process each, rendezvous at 127.0.0.1): the run equals a one-process run."""
    recipe = tiny_recipe(tiny_checkpoint_no_dropout, tmp_path / "runs", train={"epochs": 1, "max_train_samples": 64, "max_eval_samples": 41})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    _run([sys.executable, "-m", "bert_tasks", "train", str(path), "output.name=one"], tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(rank),
                               "--master_addr", "127.0.0.1", "--master_port", "29541", "-m", "bert_tasks", "train", str(path), "output.name=two"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [node.communicate(timeout=600) for node in nodes]
    assert all(node.returncode == 0 for node in nodes), [err[-2000:] for _, err in outputs]
    one, two = ([r for r in read_metrics(tmp_path / "runs" / name) if r["event"] in ("start", "eval")] for name in ("one", "two"))
    assert two[0]["processes"] == 2
    assert two[-1]["loss"] == pytest.approx(one[-1]["loss"], abs=1e-5) and two[-1]["accuracy"] == pytest.approx(one[-1]["accuracy"], abs=0.01)
