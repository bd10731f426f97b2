"""How fast could any implementation train this job on this machine? The matmul-only ceiling.

A BERT training step is dominated by the weight matmuls of its layers: per layer the query/key/
value projections (timed as one fused matmul and as three, the faster counted), the attention
output, and the two feed-forward matrices, each once forward and twice backward (gradient of the
input, gradient of the weight). This benchmark times exactly those
matmuls, at the shapes of one epoch of the job, and nothing else: no attention scores, softmax,
layer norms, GELU, dropout, embeddings, loss, optimiser or data. Rows are batched by perfect
length grouping (all rows sorted by length, 32 to a batch, each batch padded to its longest), the
least padding any length-grouped sampler can reach. For [CLS]-pooled classification the top layer
is counted as bert_tasks runs it (keys and values for every token; query, output and feed-forward
for [CLS] only), so the ceiling is for bert_tasks' own arithmetic, which is already less than the
Trainer's.

It then trains the Trainer at its best and bert_tasks at its best on the same job in this process
(`train_speed_vs_trainer.py --setting best`, one pair), and prints all three rates. ceiling /
Trainer is the largest speed-up over the Trainer that an implementation doing these matmuls with
this machine's BLAS could reach; where it is below a target ratio, that target cannot be met by
running the same arithmetic faster.

    python benchmarks/gemm_ceiling.py [--task sst2|conll] [--rows N] [--skip-training]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_speed_vs_trainer import JOBS, chosen_job, matmul_peak, non_embedding_parameters, resolve_default, run_bert_tasks, run_trainer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cached_strategies import machine  # noqa: E402

BATCH = 32


def token_lengths(task: str, rows: int) -> list[int]:
    """Unpadded length of every training sample, as the Trainer's tokenisation of the job gives it."""
    from transformers import AutoTokenizer

    dataset, _ = JOBS[task].train_set(AutoTokenizer.from_pretrained(resolve_default()), rows, False)
    return [sum(mask) for mask in dataset["attention_mask"]]


def padded_batches(lengths: list[int]) -> Counter[tuple[int, int]]:
    """Perfect length grouping: how many batches of each (padded length, rows) shape (BATCH rows, the last fewer)."""
    ordered = sorted(lengths)
    return Counter((max(ordered[i : i + BATCH]), len(ordered[i : i + BATCH])) for i in range(0, len(ordered), BATCH))


def timed(function, repeats: int = 5) -> float:
    """Best wall time of ``function()`` over ``repeats`` calls, after one warm-up."""
    function()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def linear_seconds(tokens: int, inputs: int, outputs: int) -> float:
    """Forward and both backward matmuls of one linear layer over ``tokens`` rows (fp32)."""
    x = torch.randn(tokens, inputs)  # Shape: [tokens, in]
    weight = torch.randn(outputs, inputs)  # Shape: [out, in]
    grad = torch.randn(tokens, outputs)  # Shape: [tokens, out]
    forward = timed(lambda: torch.nn.functional.linear(x, weight))  # [tokens, out]
    grad_input = timed(lambda: grad @ weight)  # Shape: [tokens, in]
    grad_weight = timed(lambda: grad.t() @ x)  # Shape: [out, in]
    return forward + grad_input + grad_weight


def projections_seconds(tokens: int, hidden: int, count: int) -> float:
    """``count`` hidden-to-hidden projections of the same input (query, key, value): the faster of one
    fused matmul and ``count`` separate ones, since which wins depends on this machine's BLAS and the shape."""
    return min(linear_seconds(tokens, hidden, count * hidden), count * linear_seconds(tokens, hidden, hidden))


def step_seconds(padded: int, rows: int, layers: int, hidden: int, intermediate: int, cls_only_top: bool) -> float:
    """The weight matmuls of one training step of ``rows`` rows padded to ``padded`` tokens."""
    tokens = rows * padded
    full_layer = (projections_seconds(tokens, hidden, 3) + linear_seconds(tokens, hidden, hidden)
                  + linear_seconds(tokens, hidden, intermediate) + linear_seconds(tokens, intermediate, hidden))
    if not cls_only_top:
        return layers * full_layer
    top = (projections_seconds(tokens, hidden, 2) + linear_seconds(rows, hidden, hidden)  # keys + values of every token; query of [CLS]
           + linear_seconds(rows, hidden, hidden) + linear_seconds(rows, hidden, intermediate) + linear_seconds(rows, intermediate, hidden))
    return (layers - 1) * full_layer + top


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["sst2", "conll"], default="sst2")
    parser.add_argument("--rows", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-training", action="store_true", help="the ceiling only, without the Trainer / bert_tasks pair")
    args = parser.parse_args()
    job = chosen_job(args)
    if job is None:
        return 0
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(resolve_default())
    lengths = token_lengths(args.task, args.rows)
    batches = padded_batches(lengths)
    threads = torch.get_num_threads()
    cls_only_top = args.task == "sst2"
    seconds = 0.0
    for (padded, rows), count in sorted(batches.items()):
        seconds += count * step_seconds(padded, rows, config.num_hidden_layers, config.hidden_size, config.intermediate_size, cls_only_top)
    ceiling = len(lengths) / seconds
    peak = matmul_peak("no", threads)
    real_tokens = statistics.fmean(lengths)
    flops_per_token = 6 * non_embedding_parameters()
    print(f"Machine: {machine()}; fp32, {threads} threads; matmul peak {peak / 1e9:.0f} GFLOP/s")
    print(f"{args.task}, {len(lengths)} rows, {real_tokens:.1f} real tokens per row, {sum(batches.values())} batches of {BATCH} "
          f"(perfect length grouping: {sum(c * r * p for (p, r), c in batches.items()) / sum(lengths):.3f} padded tokens per real token)")

    def line(name: str, speed: float) -> None:
        print(f"{name:<34}{speed:>11.1f}{speed * real_tokens * flops_per_token / peak * 100:>9.1f}%")

    print(f"{'':<34}{'samples/s':>11}{'MFU':>10}")
    line("matmul-only ceiling", ceiling)
    if args.skip_training:
        return 0
    args.setting, args.precision = "best", "no"
    with tempfile.TemporaryDirectory() as out:
        trainer = run_trainer(args, out + "/trainer")["samples_per_second"]
        ours = run_bert_tasks(args, out + "/bert_tasks")["samples_per_second"]
    line("Trainer, best", trainer)
    line("bert_tasks, best", ours)
    print(f"bert_tasks / Trainer {ours / trainer:.2f}; ceiling / Trainer {ceiling / trainer:.2f} "
          f"(the most any implementation of these matmuls could gain here); bert_tasks reaches {ours / ceiling:.0%} of the ceiling")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
