"""The frozen-work cache measured: each strategy with the cache and without (frozen-layer dropout off
in both, so both train the same network), against full fine-tuning, in one run, same precision.

    python benchmarks/cached_strategies.py [--only sst2,conll,samsum] [--epochs 3] [--precision no|bf16]
                                           [--strategies "full,last_n n=2"] [--depth 12]

- SST-2: the first 4,096 train rows of the shared sst2_tsv/train.tsv, all 872 dev rows, batch 32.
- CoNLL-2003: the first 3,000 train sentences, all of valid.txt.
- SAMSum: BERT2BERT, rows 0-699 train, 700-817 evaluate (greedy decoding, 32 new tokens, to keep
  the benchmark's evaluation short): trained jointly ("full") and with a frozen encoder.

For every run it prints the mean time of epochs 2+ (training only), the whole run's wall time (model
loading, the cache build, evaluations), the metric, and ratios: per-epoch speed-up of each run over
full fine-tuning, and cached over uncached. The machine line says whether the CPU runs bf16 natively.

`--depth 12` times the same strategies on a BERT-base-deep encoder: the default checkpoint's six
layers stacked twice (12 layers, width 384). Its arithmetic per step is a 12-layer encoder's, so
its speed-ups are what a 12-layer checkpoint gets; its accuracy is not a pretrained model's.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

import bert_tasks  # noqa: E402
from bert_tasks.rundir import read_metrics  # noqa: E402

STRATEGIES = {  # label -> strategy overrides and learning rate (new parts want higher rates)
    "full": (["strategy.name=full"], 5e-5),
    "last_n n=2": (["strategy.name=last_n", "strategy.n=2"], 3e-4),
    "head only (last_n n=0)": (["strategy.name=last_n", "strategy.n=0"], 1e-3),
    "layer_mix (frozen)": (["strategy.name=layer_mix"], 1e-3),
    "bottleneck, top 2 layers": (["strategy.name=bottleneck", "strategy.last_n=2"], 1e-3),
}

JOBS = {
    "sst2": {
        "recipe": "glue/sst2", "metric": "accuracy",
        "overrides": ["data.dataset=null", f"data.train={DATA / 'sst2_tsv' / 'train.tsv'}", f"data.validation={DATA / 'sst2_tsv' / 'dev.tsv'}",
                      "train.max_train_samples=4096", "train.batch_size=32", "task.pooling=cls"],  # as measured
        "strategies": list(STRATEGIES),
    },
    "conll": {
        "recipe": "conll2003", "metric": "f1",
        "overrides": ["data.dataset=null", f"data.train={DATA / 'conll2003' / 'train.txt'}", f"data.validation={DATA / 'conll2003' / 'valid.txt'}",
                      "train.max_train_samples=3000", "train.batch_size=32"],
        "strategies": ["full", "last_n n=2", "head only (last_n n=0)", "layer_mix (frozen)"],
    },
    "samsum": {
        "recipe": "samsum_bert2bert", "metric": "rougeL",
        "overrides": ["data.dataset=null", f"data.train={DATA / 'samsum' / 'samsum-validation.csv'}[:700]",
                      f"data.validation={DATA / 'samsum' / 'samsum-validation.csv'}[700:]", "task.freeze_encoder=true",
                      "task.num_beams=1", "task.max_new_tokens=32", "task.no_repeat_ngram_size=0"],
        "strategies": ["full", "frozen encoder, full decoder"],
        # full = joint training (the recipe's: encoder at a tenth of the rate); the other: only the decoder side trains
        "labels": {"full": (["task.freeze_encoder=false"], 4e-4), "frozen encoder, full decoder": ([], 4e-4)},
    },
}


def machine() -> str:
    """CPU model, cores, and whether it runs bf16 natively (AMX / AVX512-BF16) or emulates it:
    the same flags train.mixed_precision=auto goes by."""
    from bert_tasks.precision import cpu_native_bf16_flags

    model = platform.processor() or "?"
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), model)
    except OSError:
        pass
    native = sorted(cpu_native_bf16_flags())
    kind = f"native bf16 ({', '.join(native)})" if native else "no native bf16 (bf16 is emulated)"
    return f"{model}, {os.cpu_count()} cores, {kind}"


def stacked_checkpoint(depth: int, out: Path) -> Path:
    """The default checkpoint with its layers repeated up to `depth` (timing stand-in for a deeper BERT)."""
    import copy

    from transformers import AutoModel, AutoTokenizer

    from bert_tasks.backbone import resolve_checkpoint

    source = resolve_checkpoint("default")
    model = AutoModel.from_pretrained(source)
    layers = list(model.encoder.layer)
    model.encoder.layer = type(model.encoder.layer)([copy.deepcopy(layers[i % len(layers)]) for i in range(depth)])
    model.config.num_hidden_layers = depth
    target = out / f"default-stacked-{depth}"
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    return target


def run_one(job: dict, overrides: list[str], name: str, out: Path) -> dict:
    config = bert_tasks.load_config(job["recipe"], [*job["overrides"], *overrides, f"output.dir={out}", f"output.name={name}", "output.overwrite=true"])
    started = time.perf_counter()
    summary = bert_tasks.train(config)
    wall = time.perf_counter() - started
    seconds = [e["train_seconds"] for e in read_metrics(out / name) if e["event"] == "eval"]
    epochs = [b - a for a, b in zip([0.0, *seconds], seconds)]
    later = epochs[1:] or epochs
    return {
        "name": name, "metric": summary.eval.get(job["metric"]), "wall_seconds": round(wall, 1), "epoch_seconds": [round(e, 2) for e in epochs],
        "later_epoch_seconds": round(sum(later) / len(later), 2), "cache_build_seconds": round(summary.cache_build_seconds, 2),
        "cached": bool(summary.frozen_cache.get("cached")),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="sst2,conll,samsum")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--precision", choices=["no", "bf16"], default="no")
    parser.add_argument("--out", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--strategies", default=None, help="comma-separated labels to run (default: every one of the job's)")
    parser.add_argument("--depth", type=int, default=None, help="time a deeper encoder: the default checkpoint's layers stacked to this depth")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} (the shared data) is not here")
        return 0
    out = args.out or Path(tempfile.mkdtemp(prefix="cached-strategies-"))
    os.environ.setdefault("BERT_TASKS_CACHE", str(out / "frozen-cache"))  # fresh stores: every cached run builds its own
    checkpoint = [f"model.checkpoint={stacked_checkpoint(args.depth, out)}"] if args.depth else []
    depth = f"; encoder: default checkpoint stacked to {args.depth} layers (timing only)" if args.depth else ""
    print(f"machine: {machine()}; precision {args.precision}; epochs {args.epochs:g}{depth}")
    results = {}
    for job_name in args.only.split(","):
        job = JOBS[job_name]
        common = [*checkpoint, f"train.epochs={args.epochs}", "train.eval_every=epoch", f"train.mixed_precision={args.precision}", "train.save_every=eval", "train.keep_checkpoints=1"]
        wanted = args.strategies.split(",") if args.strategies else job["strategies"]
        for label in [label for label in job["strategies"] if label in wanted]:
            strategy, rate = job.get("labels", STRATEGIES).get(label) or STRATEGIES[label]
            base = [*common, *strategy, f"train.learning_rate={rate}"]
            slug = f"{job_name}-{label.split()[0]}-{len(results)}"
            if label == "full":
                results[(job_name, label, "full")] = run_one(job, base, f"{slug}-full", out)
                continue
            for mode, extra in (("uncached", ["train.cache_frozen=false", "train.frozen_dropout=false"]), ("cached", ["train.cache_frozen=true"])):
                results[(job_name, label, mode)] = run_one(job, [*base, *extra], f"{slug}-{mode}", out)
        print_table(job_name, job, results)
    if args.json:
        args.json.write_text(json.dumps({" | ".join(k): v for k, v in results.items()}, indent=2))
    return 0


def print_table(job_name: str, job: dict, results: dict) -> None:
    rows = {k: v for k, v in results.items() if k[0] == job_name}
    full = rows.get((job_name, "full", "full"))
    print(f"\n{job_name}: {job['metric']}; epoch s = mean training time of epochs 2+; x full = per-epoch speed-up over full fine-tuning")
    header = ["strategy", "mode", job["metric"], "epoch s", "wall s", "cache build s", "x full (epoch)", "cached / uncached (epoch)", "cached / uncached (wall)"]
    lines = [header]
    for (_, label, mode), r in rows.items():
        uncached = rows.get((job_name, label, "uncached"))
        speed_full = f"{full['later_epoch_seconds'] / r['later_epoch_seconds']:.1f}x" if full else "-"
        pair_epoch = f"{uncached['later_epoch_seconds'] / r['later_epoch_seconds']:.1f}x" if mode == "cached" and uncached else ""
        pair_wall = f"{uncached['wall_seconds'] / r['wall_seconds']:.2f}x" if mode == "cached" and uncached else ""
        metric = "-" if r["metric"] is None else f"{r['metric']:.4f}"
        lines.append([label, mode, metric, f"{r['later_epoch_seconds']:.2f}", f"{r['wall_seconds']:.1f}", f"{r['cache_build_seconds']:.1f}", speed_full, pair_epoch, pair_wall])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    for number, line in enumerate(lines):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)))
        if number == 0:
            print("  ".join("-" * width for width in widths))
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
