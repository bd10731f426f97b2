"""Keep freed host-memory blocks of up to 32 MB for reuse (glibc), so a CPU training step stops paying page faults.

Every step allocates the same buffers again (activations, autocast's weight copies, gradients).
glibc serves a block above its mmap threshold with a fresh mmap and unmaps it on free, so each step
faults every page in again and zero-fills it; its threshold starts at 128 KB and only adapts
upwards as blocks are freed, and freed heap above 128 KB at the top is handed back. On a 2-core CPU
that was about a quarter of a bf16 SST-2 step. Fixing the threshold at glibc's largest (32 MB) and
raising the trim threshold keeps such blocks in the heap for the next step.

Blocks above 32 MB (long-sequence attention scores) still get their own mmap and go back on free;
the largest such block of every step, the word-embedding gradient, is built in a kept buffer
instead (embedding_gradient.py). Keeping those in the heap too (mmap off entirely) was tried: with
batches of varying length they fragment the heap, and resident memory kept growing, to 1.6x the
stock peak after 150 steps of a small model and 8.8 GB on SQuAD, while the step was no faster than
with the 32 MB threshold (in an interleaved A/B on one process, at SST-2 and SQuAD lengths).
The numbers a run computes do not change.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit): bigger blocks are mmapped whatever is set
TRIM_THRESHOLD_BYTES = 2**31 - 1  # the largest an int takes (2 GiB): freed heap stays with the process

_applied: bool | None = None


def keep_freed_blocks() -> bool:
    """Ask glibc once per process to serve blocks of up to 32 MB from the heap and keep them; False
    where there is no glibc (macOS, Windows, musl): nothing changes there."""
    global _applied
    if _applied is None:
        _applied = _mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and _mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    return _applied


def _mallopt(option: int, value: int) -> bool:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(ctypes.c_int(option), ctypes.c_int(value)))
    except (OSError, AttributeError):
        return False
