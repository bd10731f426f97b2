"""Overlapping windows of whole words over a sentence too long for the encoder.

A window never cuts a word in two, neighbouring windows share about ``stride``
pieces, and each word is later read from the window where it sits furthest from
both edges (most context on each side), so every word gets exactly one answer.
"""
from __future__ import annotations

from typing import Sequence


def plan_windows(piece_counts: Sequence[int], budget: int, stride: int) -> list[tuple[int, int]]:
    """Word ranges ``[start, end)`` that cover every word, each at most ``budget`` pieces.

    ``piece_counts[w]`` is the number of pieces of word w, already clipped to ``budget``
    (a single word longer than a window keeps only its first pieces). ``stride`` < budget.
    """
    count = len(piece_counts)
    windows: list[tuple[int, int]] = []
    start = 0
    while True:
        end, used = start, 0
        while end < count and used + piece_counts[end] <= budget:
            used += piece_counts[end]
            end += 1
        windows.append((start, end))
        if end >= count:
            return windows
        # step back from the cut while the shared part stays within `stride` pieces and
        # leaves room for the next word (so every window moves forward)
        limit = min(stride, budget - piece_counts[end])
        next_start, shared = end, 0
        while next_start - 1 > start and shared + piece_counts[next_start - 1] <= limit:
            next_start -= 1
            shared += piece_counts[next_start]
        start = next_start


def context(word: int, window: tuple[int, int]) -> int:
    """Words of context on the thinner side of ``word`` inside ``window``."""
    start, end = window
    return min(word - start, end - 1 - word)
