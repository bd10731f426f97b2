"""The classification task on a tiny in-code BERT: single, pair, regression; parity with transformers."""
from __future__ import annotations

import pytest
import torch
from conftest import tiny_recipe
from transformers import AutoModelForSequenceClassification

from bert_tasks.assembly import assemble
from bert_tasks.config import load_config


def _assemble(tmp_path, checkpoint, **sections):
    config = load_config(tiny_recipe(checkpoint, tmp_path, **sections))
    return assemble(config)


def _batch(assembly, split, count=6):
    data = assembly.task.encode(split)
    return assembly.task.collate([data[i] for i in range(count)])


@pytest.mark.parametrize(
    "sections, outputs, dtype",
    [
        ({}, 2, torch.long),
        ({"data": "pair", "task": {"pooling": "mean"}}, 2, torch.long),
        ({"data": "pair_regression", "task": {"problem": "regression", "metrics": ["pearson", "spearman"]}}, 1, torch.float32),
    ],
    ids=["single", "pair-mean-pooling", "pair-regression"],
)
def test_forward_backward(tmp_path, tiny_checkpoint, pair_data, sections, outputs, dtype):
    data = {
        "pair": {"dataset": None, "train": str(pair_data["train"]), "validation": str(pair_data["validation"]), "text_column": "first", "text_pair_column": "second", "label_column": "relation"},
        "pair_regression": {"dataset": None, "train": str(pair_data["train"]), "validation": str(pair_data["validation"]), "text_column": "first", "text_pair_column": "second", "label_column": "score"},
    }.get(sections.pop("data", None), {})
    assembly, splits = _assemble(tmp_path, tiny_checkpoint, data=data, **sections)
    batch = _batch(assembly, splits["train"])
    if "text_pair_column" in data and data["text_pair_column"]:
        assert batch["inputs"]["token_type_ids"].max() == 1  # [CLS] A [SEP] B [SEP]
    assert batch["labels"].dtype == dtype
    logits = assembly.model(**batch["inputs"])
    assert logits.shape == (6, outputs)
    loss = assembly.task.loss(logits, batch["labels"])
    loss.backward()
    assert all(p.grad is not None for p in assembly.model.parameters() if p.requires_grad)


def test_truncates_at_max_length(tmp_path, tiny_checkpoint):
    assembly, splits = _assemble(tmp_path, tiny_checkpoint, task={"max_length": 8})
    data = assembly.task.encode(splits["train"])
    assert max(data.lengths) == 8


def test_cls_pooler_head_matches_transformers_sequence_classification(tmp_path, tiny_checkpoint):
    """Same weights -> same logits as AutoModelForSequenceClassification (pooler -> dropout -> linear)."""
    assembly, splits = _assemble(tmp_path, tiny_checkpoint)
    reference = AutoModelForSequenceClassification.from_pretrained(str(tiny_checkpoint), num_labels=2).eval()
    ours = assembly.model.eval()
    backbone_state = {k: v for k, v in reference.bert.state_dict().items() if not k.startswith("pooler.")}
    ours.backbone.load_state_dict(backbone_state)
    ours.head.pooler.load_state_dict(reference.bert.pooler.state_dict())
    ours.head.classifier.load_state_dict(reference.classifier.state_dict())
    batch = _batch(assembly, splits["validation"], count=8)
    with torch.no_grad():
        expected = reference(**batch["inputs"]).logits
        got = ours(**batch["inputs"])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())
