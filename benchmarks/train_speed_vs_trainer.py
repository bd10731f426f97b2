"""Training speed of bert_tasks against transformers' Trainer on the same model, data, batch and precision.

Both fine-tune the default checkpoint (all-MiniLM-L6-v2) on the first 4,096 rows of the shared
SST-2 train file for 1 epoch (batch 32, lr 5e-5, linear decay, no warmup, weight decay 0.01,
max length 128) and are scored on the 872-row dev set. The Trainer runs at its fastest setting
for this job: bf16 autocast, dynamic padding, train_sampling_strategy="group_by_length",
fused AdamW (its default). Each side's samples/s counts training only (no evaluation, no saving).

    python benchmarks/train_speed_vs_trainer.py [--rows 4096] [--repeats 3] [--precision bf16] [--mode side-by-side|in-turn]

Prints both samples/s, the ratio bert_tasks / Trainer and both dev accuracies. Shared machines
drift by tens of percent within minutes, so by default the two run at the same time, each on
its own core with one thread, swapping cores every pair; --mode in-turn runs them one after
the other with all cores instead.
"""
from __future__ import annotations

import csv
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cached_strategies import machine  # noqa: E402
from side_by_side import benchmark_main, pair_arguments  # noqa: E402
SST2 = ROOT.parent / "shared" / "data" / "sst2_tsv"


def read_tsv(path: Path, rows: int | None = None) -> tuple[list[str], list[int]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        data = [(r["sentence"], int(r["label"])) for r in reader]
    data = data[:rows] if rows else data
    return [t for t, _ in data], [label for _, label in data]


def run_trainer(model_path: str, rows: int, precision: str, seed: int) -> tuple[float, float]:
    import datasets
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    texts, labels = read_tsv(SST2 / "train.tsv", rows)
    dev_texts, dev_labels = read_tsv(SST2 / "dev.tsv")

    def encode(texts, labels):
        enc = tokenizer(texts, truncation=True, max_length=128)
        return datasets.Dataset.from_dict({**enc, "labels": labels})

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=32, per_device_eval_batch_size=64, learning_rate=5e-5,
            num_train_epochs=1, weight_decay=0.01, warmup_steps=0, bf16=precision == "bf16", use_cpu=True,
            train_sampling_strategy="group_by_length", eval_strategy="no", save_strategy="no",
            report_to=[], seed=seed, logging_steps=1000, disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=args, train_dataset=encode(texts, labels), data_collator=DataCollatorWithPadding(tokenizer))
        result = trainer.train()
    return result.metrics["train_samples_per_second"], dev_accuracy(trainer.model, tokenizer, dev_texts, dev_labels)


@torch.no_grad()
def dev_accuracy(model, tokenizer, texts: list[str], labels: list[int]) -> float:
    """Plain fp32 evaluation loop, independent of both training stacks."""
    model.eval()
    predictions = []
    for start in range(0, len(texts), 64):
        batch = tokenizer(texts[start : start + 64], truncation=True, max_length=128, padding=True, return_tensors="pt")
        predictions.extend(model(**batch).logits.argmax(-1).tolist())
    return float(np.mean(np.array(predictions) == np.array(labels)))


def run_bert_tasks(rows: int, precision: str, seed: int, out: str) -> tuple[float, float]:
    import bert_tasks

    config = bert_tasks.load_config("glue/sst2", [
        f"data.train={SST2 / 'train.tsv'}", f"data.validation={SST2 / 'dev.tsv'}", f"train.max_train_samples={rows}",
        "train.epochs=1", "train.batch_size=32", "train.learning_rate=5e-5", "train.warmup_ratio=0", "train.weight_decay=0.01",
        f"train.mixed_precision={precision}", "train.eval_every=epoch", f"train.seed={seed}", "task.max_length=128",
        f"output.dir={out}", "output.overwrite=true",
    ])
    summary = bert_tasks.train(config)
    return summary.train_samples_per_second, summary.eval["accuracy"]


SIDES = {
    "trainer": lambda args, out: run_trainer(resolve_default(), args.rows, args.precision, args.seed),
    "bert_tasks": lambda args, out: run_bert_tasks(args.rows, args.precision, args.seed, out),
}


def resolve_default() -> str:
    from bert_tasks.backbone import resolve_checkpoint

    return resolve_checkpoint("default")


def main() -> int:
    args = pair_arguments(__doc__.splitlines()[0], rows=4096, precision="bf16").parse_args()
    return benchmark_main(__file__, args, SIDES, SST2 / "train.tsv", f"SST-2 {args.rows} rows", "dev acc", torch.get_num_threads(), machine())


if __name__ == "__main__":
    raise SystemExit(main())
