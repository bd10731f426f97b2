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
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from side_by_side import pair_arguments, run_pair, run_side, side_command  # noqa: E402
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
    if not (SST2 / "train.tsv").is_file():
        print(f"skipped: {SST2} not found (the shared SST-2 data is needed)")
        return 0
    if args.side:
        run_side(args, SIDES)
        return 0
    pairs = []
    for repeat in range(args.repeats):
        # Swap cores / order every pair, so neither side is favoured by a core or by going first.
        results = run_pair({side: side_command(__file__, side, args) for side in ("trainer", "bert_tasks")}, args.mode, swap=repeat % 2 == 1)
        theirs, ours = results["trainer"], results["bert_tasks"]
        pairs.append((theirs, ours))
        print(f"pair {repeat + 1}: Trainer {theirs['samples_per_second']:.1f} samples/s, bert_tasks {ours['samples_per_second']:.1f} samples/s, "
              f"ratio {ours['samples_per_second'] / theirs['samples_per_second']:.2f}", flush=True)
    median = lambda values: statistics.median(list(values))  # noqa: E731
    theirs_speed = median(t["samples_per_second"] for t, _ in pairs)
    ours_speed = median(o["samples_per_second"] for _, o in pairs)
    ratio = median(o["samples_per_second"] / t["samples_per_second"] for t, o in pairs)
    theirs_acc, ours_acc = median(t["accuracy"] for t, _ in pairs), median(o["accuracy"] for _, o in pairs)
    threads = "1 thread each, side by side on separate cores" if args.mode == "side-by-side" else f"{torch.get_num_threads()} threads, in turn"
    print(f"SST-2 {args.rows} rows, batch 32, 1 epoch, precision {args.precision}, all-MiniLM-L6-v2, {threads}, {args.repeats} pairs")
    print(f"{'':<12}{'samples/s':>10}{'dev acc':>10}")
    print(f"{'Trainer':<12}{theirs_speed:>10.1f}{theirs_acc:>10.4f}")
    print(f"{'bert_tasks':<12}{ours_speed:>10.1f}{ours_acc:>10.4f}")
    print(f"speed ratio bert_tasks / Trainer (median of pairs): {ratio:.2f}")
    print(f"accuracy difference (points): {100 * (ours_acc - theirs_acc):+.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
