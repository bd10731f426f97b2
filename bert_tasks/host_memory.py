"""Keep freed large host-memory blocks for reuse (glibc), so a CPU training step stops paying page faults.

Every step allocates the same big buffers again: the word-embedding gradient alone is
vocabulary x hidden floats (47 MB for BERT-base's vocabulary at hidden 384), plus autocast's weight
copies. glibc serves blocks above its mmap threshold (at most 32 MB) with fresh mmaps and returns
them on free, so each step faults every page of them in again and zero-fills it; on a 2-core CPU
that was a quarter of a bf16 step. Turning mmap allocation off and raising the trim threshold keeps
freed blocks in the heap for the next step. The numbers a run computes do not change; only peak
resident memory can grow a little (freed blocks stay with the process).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 2**31 - 1  # the largest an int takes (2 GiB): freed heap stays with the process

_applied: bool | None = None


def keep_freed_blocks() -> bool:
    """Ask glibc once per process to serve large blocks from the heap and keep them; False where
    there is no glibc (macOS, Windows, musl): nothing changes there."""
    global _applied
    if _applied is None:
        _applied = _mallopt(M_MMAP_MAX, 0) and _mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    return _applied


def _mallopt(option: int, value: int) -> bool:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(ctypes.c_int(option), ctypes.c_int(value)))
    except (OSError, AttributeError):
        return False
