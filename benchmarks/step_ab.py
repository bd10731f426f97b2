"""One training step of the default checkpoint, two ways, interleaved in one process: what one change gains.

Two copies of all-MiniLM-L6-v2 (full fine-tuning, fused AdamW, gradient clipping at 1.0, fp32) take
the same batches of random token ids in turn, step for step, so the machine's drift hits both alike;
the ratio printed is the median of the per-step ratios (after warm-up steps), with both medians.

  --change embedding-gradient   stock embedding backward (a fresh 47 MB gradient every step) against
                                bert_tasks' kept buffer (bert_tasks/embedding_gradient.py; exact,
                                on by default under train.reuse_host_memory)
  --change dropout-masks        train.fast_dropout's masks as drawn until 2026-12-07 (63 random bits a
                                draw, three 16-bit numbers from it, compared in a strided pass) against
                                today's (64 bits, four numbers, one contiguous pass); both models run
                                with train.fast_dropout's modules and the kept embedding gradient
  --change lazy-embedding-rows  stock AdamW against an AdamW that steps only the word-embedding rows
                                whose gradient is non-zero (LazyAdam-style; changes results). Kept
                                here as the measurement behind not adopting it (README, Benchmarks).

    python benchmarks/step_ab.py [--change embedding-gradient|dropout-masks|lazy-embedding-rows] [--shapes 32x14,32x26,32x40] [--steps 40]
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cached_strategies import machine  # noqa: E402

WARMUP = 5


class LazyRowsAdamW(torch.optim.AdamW):
    """AdamW whose word-embedding table moves only in rows with a non-zero gradient (the measured alternative)."""

    def __init__(self, model: nn.Module, **kwargs) -> None:
        super().__init__(model.parameters(), **kwargs)
        self.table = model.get_input_embeddings().weight

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        grad, self.table.grad = self.table.grad, None  # the fused step skips a parameter without a gradient
        super().step(closure)
        self.table.grad = grad
        group, state = self.param_groups[0], self.state[self.table]
        if not state:
            state.update(step=torch.zeros(()), exp_avg=torch.zeros_like(self.table), exp_avg_sq=torch.zeros_like(self.table))
        state["step"] += 1
        rows = (torch.linalg.vector_norm(grad, dim=1) != 0).nonzero().squeeze(1)  # Shape: [touched rows]
        beta1, beta2 = group["betas"]
        g = grad.index_select(0, rows)  # Shape: [touched rows, hidden]
        average = state["exp_avg"].index_select(0, rows).lerp_(g, 1 - beta1)
        squares = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(g, g, value=1 - beta2)
        weights = self.table.index_select(0, rows).mul_(1 - group["lr"] * group["weight_decay"])
        step = state["step"]
        weights.sub_(average / (squares.sqrt() / (1 - beta2**step).sqrt() + group["eps"]) * (group["lr"] / (1 - beta1**step)))
        self.table.index_copy_(0, rows, weights)
        state["exp_avg"].index_copy_(0, rows, average)
        state["exp_avg_sq"].index_copy_(0, rows, squares)


def masks_until_2026_12_07(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """The previous ``keep_mask``: three 16-bit numbers from the low 63 bits of each draw. Shape: ``shape``"""
    count = math.prod(shape)
    words = -(-count // 3)
    draws = torch.empty(words, dtype=torch.int64, device=device).random_()  # Shape: [words], uniform in [0, 2^63)
    parts = draws.view(torch.int16).view(words, 4)[:, :3]  # Shape: [words, 3] (little-endian: bit 63's lane skipped)
    threshold = min(round(p * 2**16), 2**16 - 1) - 2**15
    return (parts >= threshold).reshape(-1)[:count].view(shape)


def build(change: str, changed: bool) -> tuple[nn.Module, torch.optim.Optimizer]:
    from transformers import AutoModel

    from bert_tasks.backbone import resolve_checkpoint
    from bert_tasks.embedding_gradient import reuse_embedding_gradients

    model = AutoModel.from_pretrained(resolve_checkpoint("default"), attn_implementation="sdpa")
    model.train()
    if change != "embedding-gradient" or changed:
        reuse_embedding_gradients(model)  # the other comparisons run on top of the default
    if change == "dropout-masks":
        from bert_tasks import fast_dropout

        fast_dropout.use_fast_dropout(model)
        model.masks = fast_dropout.keep_mask if changed else masks_until_2026_12_07  # put in place by timed_step
    settings = {"lr": 1e-5, "weight_decay": 0.01, "fused": True}
    if change == "lazy-embedding-rows" and changed:
        return model, LazyRowsAdamW(model, **settings)
    return model, torch.optim.AdamW(model.parameters(), **settings)


def timed_step(model: nn.Module, optimizer: torch.optim.Optimizer, ids: torch.Tensor) -> float:
    if hasattr(model, "masks"):  # --change dropout-masks: this side's mask function, for every dropout of the step
        from bert_tasks import fast_dropout

        fast_dropout.keep_mask = model.masks
    started = time.perf_counter()
    model(input_ids=ids).last_hidden_state[:, 0].square().sum().backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def compare(make: Callable[[bool], tuple[nn.Module, torch.optim.Optimizer]], rows: int, tokens: int, steps: int) -> tuple[float, float, float]:
    """(median stock seconds, median changed seconds, median per-step ratio stock / changed)."""
    pairs = [make(False), make(True)]
    seconds: list[list[float]] = [[], []]
    for _ in range(steps + WARMUP):
        ids = torch.randint(1000, 20000, (rows, tokens))  # Shape: [rows, tokens]
        for side, (model, optimizer) in enumerate(pairs):
            seconds[side].append(timed_step(model, optimizer, ids))
    stock, changed = seconds[0][WARMUP:], seconds[1][WARMUP:]
    return statistics.median(stock), statistics.median(changed), statistics.median(a / b for a, b in zip(stock, changed))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--change", choices=["embedding-gradient", "dropout-masks", "lazy-embedding-rows"], default="embedding-gradient")
    parser.add_argument("--shapes", default="32x14,32x26,32x40", help="rows x tokens of each batch size to time")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    from bert_tasks.host_memory import keep_freed_blocks

    keep_freed_blocks()  # as a bert_tasks CPU run does
    print(f"Machine: {machine()}; fp32, {torch.get_num_threads()} threads; {args.change}, {args.steps} steps after {WARMUP} warm-up")
    print(f"{'batch':<10}{'stock ms':>10}{'changed ms':>12}{'ratio':>8}")
    for shape in args.shapes.split(","):
        rows, tokens = (int(n) for n in shape.split("x"))
        stock, changed, ratio = compare(lambda changed: build(args.change, changed), rows, tokens, args.steps)
        print(f"{shape:<10}{stock * 1000:>10.1f}{changed * 1000:>12.1f}{ratio:>8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
