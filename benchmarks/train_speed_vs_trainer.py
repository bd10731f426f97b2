"""Training speed of bert_tasks against transformers' Trainer: best vs best, out of the box, FLOP utilisation.

Jobs (--task), each 1 epoch from the default checkpoint (all-MiniLM-L6-v2), batch 32, weight
decay 0.01, the same learning rate and warmup on both sides:
  sst2   first 4,096 rows of the shared SST-2 train file, max length 128, lr 5e-5; dev accuracy (872 rows)
  conll  first 3,000 sentences of CoNLL-2003 train, first-piece labels, lr 1e-4, 10% warmup; entity F1 on valid
  squad  first 2,000 questions of the agreed SQuAD split, windows of 384 with stride 128, lr 1e-4,
         10% warmup; F1 (percent) on the first 500 evaluation questions
Settings (--setting):
  best     both at their fastest for this machine, in the same precision (--precision; default bf16
           where the CPU runs it natively, else fp32): the Trainer with per-batch padding,
           train_sampling_strategy=group_by_length and fused AdamW; bert_tasks with its defaults plus
           train.fast_dropout=true (opt-in: cheaper dropout masks, a different random stream).
  default  out of the box: the Trainer as its example scripts run it by default (fp32, random
           batches, run_glue.py / run_qa.py padding every row to max_length, run_ner.py per batch)
           against bert_tasks' defaults (train.mixed_precision=auto, length-grouped batches).

    python benchmarks/train_speed_vs_trainer.py [--task sst2|conll|squad] [--setting best|default] [--rows N] [--repeats 3] [--mode side-by-side|in-turn]

Prints every pair, both medians (samples/s, real tokens/s, FLOP utilisation, the task's metric),
the ratio bert_tasks / Trainer, and where bert_tasks' step time goes. FLOP utilisation is
6 x non-embedding parameters x real (unpadded) tokens per second over the machine's matmul peak,
measured here in each side's precision with the threads each side had. samples/s counts training
only (no evaluation, no saving); for QA a sample is one 384-token window.
"""
from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_data import CONLL, ROOT, SQUAD, SQUAD_SPLIT_AT, SST2  # noqa: E402

sys.path.insert(0, str(ROOT))
import trainer_reference as reference  # noqa: E402
from cached_strategies import machine  # noqa: E402
from side_by_side import pair_arguments, run_pairs, run_side  # noqa: E402

SQUAD_SCORED = f"[{SQUAD_SPLIT_AT}:{SQUAD_SPLIT_AT + 500}]"  # the first 500 evaluation questions


@dataclass(frozen=True)
class Job:
    rows: int
    recipe: str
    data: Callable[[int], list[str]]  # rows -> bert_tasks data overrides
    learning_rate: float
    warmup_ratio: float
    model_class: str  # the stock transformers head
    num_labels: int
    train_set: Callable[[Any, int, bool], tuple[Any, Any]]  # (tokenizer, rows, padded) -> (dataset, collator)
    score: Callable[[Any, Any], float]
    metric: str  # as bert_tasks' summary names it
    needs: Path


JOBS = {
    "sst2": Job(4096, "glue/sst2", lambda rows: [f"data.train={SST2 / 'train.tsv'}", f"data.validation={SST2 / 'dev.tsv'}",
                                                 f"train.max_train_samples={rows}", "task.max_length=128",
                                                 "task.pooling=cls"],  # the Trainer's model pools [CLS] too
                5e-5, 0.0, "AutoModelForSequenceClassification", 2, reference.sst2_train_set, reference.sst2_accuracy, "accuracy", SST2 / "train.tsv"),
    "conll": Job(3000, "conll2003", lambda rows: ["data.dataset=null", f"data.train={CONLL / 'train.txt'}", f"data.validation={CONLL / 'valid.txt'}",
                                                  f"train.max_train_samples={rows}"],
                 1e-4, 0.1, "AutoModelForTokenClassification", 9, reference.conll_train_set, reference.conll_f1, "f1", CONLL / "train.txt"),
    "squad": Job(2000, "squad", lambda rows: ["data.dataset=null", f"data.train={SQUAD}[:{rows}]", f"data.validation={SQUAD}{SQUAD_SCORED}",
                                              "task.max_length=384", "task.doc_stride=128"],
                 1e-4, 0.1, "AutoModelForQuestionAnswering", 0, reference.squad_train_set,
                 lambda model, tokenizer: reference.squad_f1(model, tokenizer, SQUAD_SCORED), "f1", SQUAD),
}


def chosen_job(args: Any) -> Optional[Job]:
    """The job `--task` names, with `--rows` defaulted to the job's; None (said) when its data is absent."""
    job = JOBS[args.task]
    args.rows = args.rows or job.rows
    if not job.needs.exists():
        print(f"skipped: {job.needs} not found (the shared data is needed)")
        return None
    return job


def resolve_default() -> str:
    from bert_tasks.backbone import resolve_checkpoint

    return resolve_checkpoint("default")


def run_trainer(args: Any, out: str) -> dict:
    import transformers
    from transformers import AutoTokenizer

    job, best = JOBS[args.task], args.setting == "best"
    path = resolve_default()
    tokenizer = AutoTokenizer.from_pretrained(path)
    dataset, collator = job.train_set(tokenizer, args.rows, not best)
    torch.manual_seed(args.seed)
    head = getattr(transformers, job.model_class)
    model = head.from_pretrained(path, num_labels=job.num_labels) if job.num_labels else head.from_pretrained(path)
    bf16 = best and args.precision == "bf16"  # out of the box the Trainer trains in fp32
    settings = {"per_device_train_batch_size": 32, "learning_rate": job.learning_rate, "num_train_epochs": 1, "weight_decay": 0.01,
                "warmup_steps": job.warmup_ratio, "bf16": bf16, "seed": args.seed,  # warmup_steps below 1 is a ratio
                **({"train_sampling_strategy": "group_by_length"} if best else {})}
    speed = reference.trainer_speed(model, dataset, collator, settings, out)
    return {"samples_per_second": speed, "accuracy": job.score(model, tokenizer), "precision": "bf16" if bf16 else "no"}


def run_bert_tasks(args: Any, out: str) -> dict:
    import bert_tasks

    job = JOBS[args.task]
    # best: the precision asked for, and the opt-in cheaper dropout masks (a different random stream)
    precision = [f"train.mixed_precision={args.precision}", "train.fast_dropout=true"] if args.setting == "best" else []  # default: auto
    config = bert_tasks.load_config(job.recipe, [
        *job.data(args.rows), "train.epochs=1", "train.batch_size=32", f"train.learning_rate={job.learning_rate}",
        f"train.warmup_ratio={job.warmup_ratio}", "train.weight_decay=0.01", *precision, "train.eval_every=epoch",
        f"train.seed={args.seed}", "train.step_breakdown=true", f"output.dir={out}", "output.overwrite=true",
    ])
    summary = bert_tasks.train(config)
    return {"samples_per_second": summary.train_samples_per_second, "accuracy": summary.eval[job.metric],
            "precision": summary.precision, "breakdown": summary.step_breakdown_ms}


SIDES = {"trainer": run_trainer, "bert_tasks": run_bert_tasks}


# ---- FLOP utilisation ---------------------------------------------------------------------------

def real_tokens_per_sample(job: Job, rows: int) -> float:
    """Mean unpadded tokens of one training sample (row, sentence window or QA window)."""
    from transformers import AutoTokenizer

    dataset, _ = job.train_set(AutoTokenizer.from_pretrained(resolve_default()), rows, False)
    return statistics.fmean(sum(mask) for mask in dataset["attention_mask"])


def non_embedding_parameters() -> int:
    """Parameters of the transformer layers (what 6 x N x tokens counts; embeddings and heads excluded)."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(resolve_default())
    return sum(p.numel() for name, p in model.named_parameters() if name.startswith("encoder."))


def matmul_peak(precision: str, threads: int, size: int = 1024, repeats: int = 20) -> float:
    """Best FLOP/s of a square matmul in this precision with ``threads`` threads."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)  # Shape: [size, size] each
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - started)
    torch.set_num_threads(before)
    return 2 * size**3 / best


# ---- the report ---------------------------------------------------------------------------------

def report(args: Any, pairs: list[tuple[dict, dict]]) -> None:
    job = JOBS[args.task]
    threads = 1 if args.mode == "side-by-side" else torch.get_num_threads()
    tokens = real_tokens_per_sample(job, args.rows)
    flops_per_token = 6 * non_embedding_parameters()
    peaks = {p: matmul_peak(p, threads) for p in {side["precision"] for pair in pairs for side in pair}}
    how = "1 thread each, side by side on separate cores" if args.mode == "side-by-side" else f"{threads} threads, in turn"
    print(f"Machine: {machine()}")
    print(f"{args.task}, {args.rows} rows, setting {args.setting}, batch 32, 1 epoch, {how}, {len(pairs)} pairs; "
          f"{tokens:.1f} real tokens per sample; matmul peak " + ", ".join(f"{'fp32' if p == 'no' else p} {v / 1e9:.0f} GFLOP/s" for p, v in sorted(peaks.items())))
    print(f"{'':<12}{'precision':>10}{'samples/s':>11}{'tokens/s':>10}{'MFU':>8}{job.metric:>10}")
    medians = {}
    for index, name in enumerate(("Trainer", "bert_tasks")):
        sides = [pair[index] for pair in pairs]
        speed = statistics.median(s["samples_per_second"] for s in sides)
        metric = statistics.median(s["accuracy"] for s in sides)
        precision = sides[0]["precision"]
        utilisation = speed * tokens * flops_per_token / peaks[precision]
        medians[name] = (speed, metric)
        print(f"{name:<12}{'fp32' if precision == 'no' else precision:>10}{speed:>11.1f}{speed * tokens:>10.0f}{100 * utilisation:>7.1f}%{metric:>10.4f}")
    ratio = statistics.median(o["samples_per_second"] / t["samples_per_second"] for t, o in pairs)
    scale = 1 if args.task == "squad" else 100  # SQuAD F1 is in percent already
    print(f"speed ratio bert_tasks / Trainer (median of pairs): {ratio:.2f}")
    print(f"{job.metric} difference (points): {scale * (medians['bert_tasks'][1] - medians['Trainer'][1]):+.2f}")
    from bert_tasks.step_timing import format_breakdown

    print(f"bert_tasks {format_breakdown(pairs[-1][1]['breakdown'])}")


def main() -> int:
    from bert_tasks.precision import choose_precision

    native = choose_precision("auto", "cpu").precision
    parser = pair_arguments(__doc__.splitlines()[0], rows=0, precision="bf16" if native == "bf16" else "no")
    parser.add_argument("--task", choices=list(JOBS), default="sst2")
    parser.add_argument("--setting", choices=["best", "default"], default="best")
    parser.set_defaults(forward=["task", "setting"])
    args = parser.parse_args()
    if chosen_job(args) is None:
        return 0
    if args.side:
        run_side(args, SIDES)
        return 0
    report(args, run_pairs(__file__, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
