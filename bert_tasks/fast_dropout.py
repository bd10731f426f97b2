"""``train.fast_dropout``: cheaper dropout masks on a CPU.

PyTorch's CPU dropout draws one Bernoulli sample per element from its Mersenne Twister, about 7 ns
an element on one thread whatever the thread count: on SST-2-length batches that is ~8% of a
training step, and it grows with sequence length. Here one 64-bit draw of the same generator
(``Tensor.random_`` over the whole int64 range: all 64 bits uniform) gives four 16-bit numbers, and
an element is kept when its number is at or above ``round(p * 65536)``: a Bernoulli mask whose drop
rate is within 2^-17 of ``p``, at a quarter of the draws, compared in one contiguous pass. (Until
2026-12-07 the draw covered 63 bits and three numbers were taken from it, in a strided pass: masks
took twice as long, and a seeded run with this option drew other masks than it does now.)

What changes: the random stream (a seeded run no longer reproduces its numbers without the option)
and the drop rate by at most 2^-17. What does not: the mask's distribution otherwise, the 1/(1-p)
scaling, evaluation (no dropout), resume (the generator's state is checkpointed as before). On other
devices the stock dropout runs (CUDA's is fused and fast already).

Attention dropout happens inside transformers' SDPA call, where a CPU with dropout falls back to
PyTorch's unfused attention and its slow masks (at 384 tokens, over a third of a BERT training step).
``use_fast_dropout`` therefore registers an "sdpa" attention function that, for attention modules
whose ``dropout`` is a ``FastDropout`` and only while they train on a CPU, computes the same
softmax(q k^T * scale + mask) v with the mask drawn here; every other call goes to transformers' own.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
from torch import nn

DRAW_BITS = 16  # bits of one element's random number
DRAWS_PER_WORD = 4  # 16-bit numbers taken from each 64-bit draw


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """Bool mask, True with probability 1 - round(p * 2^16) / 2^16. Shape: ``shape``"""
    count = math.prod(shape)
    words = -(-count // DRAWS_PER_WORD)
    draws = torch.empty(words, dtype=torch.int64, device=device).random_(-(2**63), None)  # Shape: [words], all 64 bits uniform
    numbers = draws.view(torch.int16)  # Shape: [4 * words], each uniform over [-2^15, 2^15)
    threshold = min(round(p * 2**DRAW_BITS), 2**DRAW_BITS - 1) - 2 ** (DRAW_BITS - 1)  # p just below 1 still drops
    return (numbers >= threshold)[:count].view(shape)


class _MaskedScale(torch.autograd.Function):
    """``x * mask * scale``, saving the mask as bools (1 byte an element) for backward."""

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, p: float, scale: float) -> torch.Tensor:  # type: ignore[override]
        keep = keep_mask(inputs.shape, p, inputs.device)
        ctx.save_for_backward(keep)
        ctx.scale = scale
        out = inputs * keep
        return out.mul_(scale) if scale != 1.0 else out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        (keep,) = ctx.saved_tensors
        out = grad * keep
        return (out.mul_(ctx.scale) if ctx.scale != 1.0 else out), None, None


class FastDropout(nn.Dropout):
    """``nn.Dropout`` with ``keep_mask`` masks on the CPU (the stock dropout elsewhere)."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or inputs.device.type != "cpu" or not inputs.is_floating_point():
            return super().forward(inputs)
        if self.p == 1.0:
            return inputs * 0.0
        return _MaskedScale.apply(inputs, self.p, 1.0 / (1.0 - self.p))


# Attention features the plain softmax(q k^T * scale + mask) v below does not implement: such calls go to
# transformers' own function (a causal decoder may get mask None and rely on is_causal, for example).
STOCK_ONLY_KWARGS = ("position_bias", "is_causal", "softcap", "s_aux", "sliding_window", "head_mask")


def _needs_stock(module: nn.Module, kwargs: dict[str, Any]) -> bool:
    """True when the call asks for more than bidirectional attention with an optional mask."""
    if getattr(module, "is_causal", False) or getattr(module, "num_key_value_groups", 1) != 1:
        return True
    return any(kwargs.get(name) not in (None, False) for name in STOCK_ONLY_KWARGS)


def _attention_with_fast_dropout(stock: Callable) -> Callable:
    """transformers' "sdpa" attention function, except for training attention modules on a CPU whose
    dropout is a ``FastDropout``: there the same attention with that module's masks."""

    def attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: Optional[torch.Tensor], dropout: float = 0.0, scaling: Optional[float] = None,
                  **kwargs: Any) -> tuple[torch.Tensor, None]:
        probs_dropout = getattr(module, "dropout", None)
        if dropout == 0.0 or query.device.type != "cpu" or not isinstance(probs_dropout, FastDropout) or _needs_stock(module, kwargs):
            return stock(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
        # Shape: query [batch, heads, q, head], key/value [batch, heads, k, head], attention_mask [batch, 1, q, k] or None
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        scores = torch.matmul(query, key.transpose(2, 3)) * scale  # Shape: [batch, heads, q, k]
        if attention_mask is not None and attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask[..., : key.shape[-2]], torch.finfo(scores.dtype).min)
        elif attention_mask is not None:
            scores = scores + attention_mask[..., : key.shape[-2]]
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        dropped = _MaskedScale.apply(probs, dropout, 1.0)  # the 1/(1-p) scaling on the smaller output instead
        context = torch.matmul(dropped, value) * (1.0 / (1.0 - dropout))  # Shape: [batch, heads, q, head]
        return context.transpose(1, 2).contiguous(), None  # Shape: [batch, q, heads, head]

    attention.stock = stock  # type: ignore[attr-defined]
    return attention


def _register_attention() -> None:
    from transformers.modeling_utils import AttentionInterface

    stock = AttentionInterface._global_mapping["sdpa"]
    if not hasattr(stock, "stock"):  # once per process
        AttentionInterface.register("sdpa", _attention_with_fast_dropout(stock))


def use_fast_dropout(model: nn.Module) -> int:
    """Every plain ``nn.Dropout`` inside ``model`` becomes a ``FastDropout`` (same ``p``; no parameters,
    so saved weights do not change), attention dropout included. Returns how many were swapped."""
    _register_attention()
    swapped = 0
    for module in model.modules():
        if type(module) is nn.Dropout:
            module.__class__ = FastDropout
            swapped += 1
    return swapped
