"""Build a large embedding's gradient in one buffer kept from step to step on a CPU. Exact.

PyTorch's embedding backward allocates a fresh ``[vocabulary, hidden]`` tensor of zeros every step
and adds the batch's rows into it. For BERT's word embeddings that is 47 MB (30,522 x 384 floats),
above glibc's largest mmap threshold (32 MB, see host_memory.py), so every step maps it anew and
page-faults all of it in while zero-filling: about 20 ms on a 2-core CPU, 7% of an SST-2 step,
against under 2 ms to zero the same memory once it is mapped.

``reuse_embedding_gradients`` gives each such embedding (trainable, on a CPU, default options) a
backward that zeroes one kept buffer, adds the batch's rows into it in the same order as PyTorch's
kernel (``index_add_`` over the indices as they come; PyTorch's result is bit-for-bit the same,
tested), zeroes the padding row, and hands autograd a new tensor over that buffer, which autograd
takes as the parameter's ``.grad`` without copying. It does so only when the parameter has no
gradient yet (after ``zero_grad(set_to_none=True)``, as the training loop does, which holds no
other reference to an old gradient), so the buffer is free again; otherwise (gradient
accumulation's later micro-batches, a caller that zeroes in place) it returns PyTorch's own fresh
gradient. The buffer stays allocated between steps (47 MB).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from . import host_memory

MMAP_THRESHOLD_BYTES = host_memory.MMAP_THRESHOLD_BYTES  # blocks above it glibc maps afresh on every allocation


class _EmbeddingWithKeptGradient(torch.autograd.Function):
    """``owner``'s lookup (``weight`` is ``owner.weight``, passed so autograd tracks it) whose weight
    gradient is built in ``owner``'s kept buffer."""

    @staticmethod
    def forward(ctx, ids: torch.Tensor, weight: torch.Tensor, owner: "KeptGradientEmbedding") -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(ids)
        ctx.owner = owner
        return nn.functional.embedding(ids, weight, owner.padding_idx)  # Shape: [*ids.shape, hidden]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor, None]:  # type: ignore[override]
        (ids,) = ctx.saved_tensors
        weight, padding_idx = ctx.owner.weight, ctx.owner.padding_idx
        rows = grad.reshape(-1, weight.shape[1])  # Shape: [tokens, hidden]
        flat_ids = ids.reshape(-1)  # Shape: [tokens]
        if weight.grad is not None:  # the kept buffer may be that gradient: PyTorch's own fresh one
            return None, torch.ops.aten.embedding_dense_backward(rows, flat_ids, weight.shape[0], -1 if padding_idx is None else padding_idx, False), None
        buffer = ctx.owner.gradient_buffer(weight, rows.dtype)
        buffer.zero_()
        buffer.index_add_(0, flat_ids, rows)
        if padding_idx is not None:
            buffer[padding_idx].zero_()
        return None, buffer.detach(), None  # a new tensor over the buffer: autograd keeps it as .grad uncopied


class KeptGradientEmbedding(nn.Embedding):
    """An ``nn.Embedding`` (same parameters, same state dict) whose CPU training gradient reuses one buffer."""

    _kept_gradient: Optional[torch.Tensor] = None

    def gradient_buffer(self, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        kept = self._kept_gradient
        if kept is None or kept.shape != weight.shape or kept.dtype != dtype or kept.device != weight.device:
            kept = self._kept_gradient = torch.empty(weight.shape, dtype=dtype, device=weight.device)  # Shape: [vocabulary, hidden]
        return kept

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if not (torch.is_grad_enabled() and weight.requires_grad and weight.device.type == "cpu" and _default_options(self)):
            return super().forward(ids)
        return _EmbeddingWithKeptGradient.apply(ids, weight, self)

    def __getstate__(self) -> dict[str, Any]:  # a copy (deepcopy, pickle) does not carry the 47 MB scratch buffer
        state = self.__dict__.copy()
        state.pop("_kept_gradient", None)
        return state


def _default_options(embedding: nn.Embedding) -> bool:
    return embedding.max_norm is None and not embedding.scale_grad_by_freq and not embedding.sparse


def reuse_embedding_gradients(model: nn.Module, min_bytes: Optional[int] = None) -> int:
    """Turn every trainable CPU ``nn.Embedding`` whose gradient glibc would map afresh each step
    (above ``min_bytes``, by default its 32 MB threshold) into a ``KeptGradientEmbedding``; returns
    how many. Nothing else changes."""
    threshold = MMAP_THRESHOLD_BYTES if min_bytes is None else min_bytes
    changed = 0
    for module in model.modules():
        if type(module) is not nn.Embedding or not _default_options(module):
            continue
        weight = module.weight
        if weight.requires_grad and weight.device.type == "cpu" and weight.numel() * weight.element_size() > threshold:
            module.__class__ = KeptGradientEmbedding
            changed += 1
    return changed
