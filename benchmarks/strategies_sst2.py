"""Tuning strategies side by side on real data: the default checkpoint on 4,096 SST-2 train rows,
scored on the 872-row dev set. Each strategy gets a learning rate suited to it (adapters, LoRA
and a frozen-encoder layer mix want far higher rates than full fine-tuning).

    python benchmarks/strategies_sst2.py [--rows 4096] [--epochs 2] [--precision no]

Prints trainable parameters (% of the model), dev accuracy, train time and checkpoint size per strategy,
and the gap of each to full fine-tuning.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SST2 = ROOT.parent / "shared" / "data" / "sst2_tsv"

# label, strategy overrides, learning rate
STRATEGIES = [
    ("full", ["strategy.name=full"], 5e-5),
    ("last_n n=2", ["strategy.name=last_n", "strategy.n=2"], 1e-4),
    ("bottleneck houlsby rf16", ["strategy.name=bottleneck", "strategy.placement=houlsby", "strategy.reduction_factor=16"], 1e-3),
    ("layer_mix (frozen)", ["strategy.name=layer_mix"], 1e-3),
    ("lora r8 q,v", ["strategy.name=lora", "strategy.r=8", "strategy.alpha=16"], 1e-3),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--precision", choices=["no", "bf16"], default="no")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--only", nargs="*", help="labels to run (default: all)")
    args = parser.parse_args()
    if not (SST2 / "train.tsv").is_file():
        print(f"skipped: {SST2} not found (the shared SST-2 data is needed)")
        return 0
    import bert_tasks

    rows = []
    with tempfile.TemporaryDirectory() as out:
        for label, overrides, lr in STRATEGIES:
            if args.only and label not in args.only:
                continue
            config = bert_tasks.load_config("glue/sst2", [
                f"data.train={SST2 / 'train.tsv'}", f"data.validation={SST2 / 'dev.tsv'}", f"train.max_train_samples={args.rows}",
                f"train.epochs={args.epochs}", f"train.learning_rate={lr}", "train.warmup_ratio=0.1", "train.eval_every=epoch",
                f"train.mixed_precision={args.precision}", f"train.seed={args.seed}", f"output.dir={out}",
                f"output.name={label.split()[0]}", "task.pooling=cls", *overrides,
            ])
            summary = bert_tasks.train(config)
            rows.append((label, lr, summary))
            print(f"done: {label}: accuracy {summary.eval['accuracy']:.4f}", file=sys.stderr, flush=True)
    full = next((s.eval["accuracy"] for label, _, s in rows if label == "full"), None)
    print(f"SST-2 {args.rows} train rows, {args.epochs:g} epochs, batch 32, precision {args.precision}, dev 872 rows, all-MiniLM-L6-v2")
    print(f"{'strategy':<26}{'lr':>8}{'trainable':>12}{'%':>8}{'dev acc':>9}{'vs full':>9}{'train s':>9}{'size MB':>9}")
    for label, lr, s in rows:
        gap = f"{100 * (s.eval['accuracy'] - full):+.2f}" if full is not None else "-"
        print(f"{label:<26}{lr:>8.0e}{s.trainable_parameters:>12,}{s.trainable_percent:>8.2f}{s.eval['accuracy']:>9.4f}{gap:>9}{s.train_seconds:>9.1f}{s.checkpoint_bytes / 1e6:>9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
