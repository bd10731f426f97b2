"""Where a training step's time goes (``train.step_breakdown=true``): data, forward, backward, clip,
optimizer, zero_grad and the loop's own bookkeeping, in milliseconds per optimiser step.

Off by default: on a GPU each mark waits for the device (kernels run asynchronously), which
slows training a little; on a CPU the marks cost nothing measurable.
"""
from __future__ import annotations

import time
from typing import Optional

import torch

PHASES = ("data", "forward", "backward", "clip", "optimizer", "zero_grad", "other")


class StepTimer:
    """Seconds per phase since ``restart``; ``mark(phase)`` books the time since the previous mark."""

    def __init__(self, enabled: bool, device: torch.device) -> None:
        self.enabled, self.device = enabled, device
        self.seconds = {phase: 0.0 for phase in PHASES}
        self._last: Optional[float] = None

    def restart(self) -> None:
        """Start timing afresh (training resumes after an evaluation or a checkpoint, which are not steps)."""
        if self.enabled:
            self._last = self._now()

    def mark(self, phase: str) -> None:
        if not self.enabled or self._last is None:
            return
        now = self._now()
        self.seconds[phase] += now - self._last
        self._last = now

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def per_step_ms(self, steps: int) -> dict[str, float]:
        """Milliseconds per optimiser step for each phase; empty when timing was off or no step ran."""
        if not self.enabled or steps <= 0:
            return {}
        return {phase: round(1000 * seconds / steps, 2) for phase, seconds in self.seconds.items()}


def format_breakdown(milliseconds: dict[str, float]) -> str:
    """'step 135.2 ms: forward 58.1 (43%), backward 55.0 (41%), ...' (largest first)."""
    total = sum(milliseconds.values())
    parts = ", ".join(f"{phase} {ms:.1f} ({100 * ms / total:.0f}%)" for phase, ms in sorted(milliseconds.items(), key=lambda kv: -kv[1]))
    return f"step {total:.1f} ms: {parts}"
