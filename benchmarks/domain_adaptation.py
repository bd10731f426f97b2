"""Domain adaptation on real data: masked-LM training on SST-2 train sentences, then SST-2 fine-tuning from the result.

1. Masked LM on the SST-2 train sentences (never the dev set), grouped 8 consecutive rows to a
   pseudo-document (SST-2 rows are phrases of many reviews, so "documents" and NSP / SOP pairs
   here are artificial), 1 epoch, bf16 when the CPU has it natively. Scored on the 872 SST-2 dev
   sentences with fixed masks: perplexity and masked-token accuracy.
   - "before": the default checkpoint has no MLM head, so its score is with a head trained on the
     same budget over the unchanged encoder (strategy last_n n=0): what the encoder knew already;
   - "after": strategy full, objective none; and the same budget with NSP and with SOP.
2. SST-2 fine-tuning (first 4,096 train rows, 2 epochs, 872 dev rows, 2 seeds) from each adapted
   encoder (``model.checkpoint=RUN``) against the original checkpoint.

    python benchmarks/domain_adaptation.py [--mlm-rows 67349] [--seeds 1 2] [--out DIR]

Prints one table per part and the machine it ran on.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bert_tasks  # noqa: E402
from cached_strategies import machine  # noqa: E402

SST2 = ROOT.parent / "shared" / "data" / "sst2_tsv"
PRECISION = "bf16" if "native bf16" in machine() else "no"
OBJECTIVES = {"head only (encoder unchanged)": ("none", "strategy.name=last_n", "strategy.n=0"),
              "full, MLM": ("none", "strategy.name=full"),
              "full, MLM + NSP": ("nsp", "strategy.name=full"),
              "full, MLM + SOP": ("sop", "strategy.name=full")}


def pretrain(label: str, out: Path, rows: int, learning_rate: float) -> tuple[Path, dict]:
    objective, *strategy = OBJECTIVES[label]
    name = "mlm-" + "".join(c if c.isalnum() else "-" for c in label.lower())[:40]
    config = bert_tasks.load_config("mlm", [
        "data.dataset=null", f"data.train={SST2 / 'train.tsv'}", f"data.validation={SST2 / 'dev.tsv'}", "data.text_column=sentence",
        f"train.max_train_samples={rows}", "task.rows_per_document=8", f"task.sentence_objective={objective}", *strategy,
        "train.epochs=1", "train.batch_size=32", f"train.learning_rate={learning_rate}", "train.warmup_ratio=0.06",
        f"train.mixed_precision={PRECISION}", f"output.dir={out}", f"output.name={name}", "output.overwrite=true",
    ])
    summary = bert_tasks.train(config)
    return Path(summary.run_dir), summary.eval


def finetune(checkpoint: str, seed: int, out: Path, name: str) -> float:
    config = bert_tasks.load_config("glue/sst2", [
        f"model.checkpoint={checkpoint}", f"data.train={SST2 / 'train.tsv'}", f"data.validation={SST2 / 'dev.tsv'}",
        "train.max_train_samples=4096", "train.epochs=2", "train.batch_size=32", "train.learning_rate=5e-5",
        f"train.mixed_precision={PRECISION}", f"train.seed={seed}", f"output.dir={out}", f"output.name={name}-seed{seed}", "output.overwrite=true",
        "train.save_every=eval", "train.keep_checkpoints=1",
    ])
    return bert_tasks.train(config).eval["accuracy"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlm-rows", type=int, default=67349, help="SST-2 train sentences for masked-LM training (67,349: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    if not (SST2 / "train.tsv").is_file():
        print(f"skipped: {SST2} not found (the shared SST-2 data is needed)")
        return 0
    with tempfile.TemporaryDirectory() as temporary:
        out = args.out or Path(temporary)
        runs, scores = {}, {}
        for label in OBJECTIVES:
            runs[label], scores[label] = pretrain(label, out, args.mlm_rows, args.learning_rate)
            print(f"{label}: {scores[label]}", flush=True)
        accuracy = {"original checkpoint": [finetune("default", seed, out, "sst2-original") for seed in args.seeds]}
        for label in list(OBJECTIVES)[1:]:
            accuracy[f"adapted: {label}"] = [finetune(str(runs[label]), seed, out, f"sst2-{runs[label].name}") for seed in args.seeds]
            print(f"{label}: SST-2 dev accuracy {accuracy[f'adapted: {label}']}", flush=True)

    print(f"\nMachine: {machine()}; precision {PRECISION}")
    print(f"Masked LM on {args.mlm_rows} SST-2 train sentences (8 per pseudo-document), 1 epoch, batch 32, lr {args.learning_rate}; "
          "scored on the 872 SST-2 dev sentences (fixed masks)")
    print(f"{'':<34}{'perplexity':>12}{'masked acc':>12}{'NSP/SOP acc':>13}")
    for label, result in scores.items():
        sentence = next((v for k, v in result.items() if k.endswith("_accuracy") and k != "accuracy"), None)
        print(f"{label:<34}{result['perplexity']:>12.2f}{result['accuracy']:>12.4f}{'' if sentence is None else f'{sentence:.4f}':>13}")
    print(f"\nSST-2 fine-tuning: 4,096 train rows, 2 epochs, batch 32, lr 5e-5, 872 dev rows, seeds {args.seeds}")
    print(f"{'start from':<40}{'dev accuracy per seed':>30}{'mean':>8}")
    for label, values in accuracy.items():
        print(f"{label:<40}{', '.join(f'{v:.4f}' for v in values):>30}{statistics.mean(values):>8.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
