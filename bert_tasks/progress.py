"""Training progress for a person: a live bar on a terminal, plain lines in a log file or pipe.

A carriage-return bar written into a log (a cluster job, CI, ``compare``'s cell logs) becomes one
enormous line; when stderr is not a terminal, each training-loss record prints one line instead:

    demo-full: step 40/120 (33%) loss 0.6612 lr 1.8e-05 211.3 samples/s elapsed 0:00:12
"""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

from tqdm.auto import tqdm


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class Progress:
    """``step`` after every optimiser step (with the loss on logging steps), ``note`` for results."""

    def __init__(self, name: str, total: int, initial: int, samples: int, enabled: bool, stream: Optional[TextIO] = None) -> None:
        self.name, self.total, self.enabled = name, total, enabled
        self.stream = stream or sys.stderr
        self.started, self.first_samples = time.perf_counter(), samples
        self.bar = tqdm(total=total, initial=initial, desc=name, file=self.stream) if enabled and self.stream.isatty() else None

    def step(self, step: int, samples: int, loss: Optional[float] = None, learning_rate: Optional[float] = None) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            if loss is not None:
                self.bar.set_postfix(loss=f"{loss:.4f}")
            return
        if loss is None:
            return
        elapsed = time.perf_counter() - self.started
        rate = (samples - self.first_samples) / elapsed if elapsed > 0 else 0.0
        lr = f" lr {learning_rate:.2e}" if learning_rate is not None else ""
        percent = 100 * step // max(self.total, 1)
        print(f"{self.name}: step {step}/{self.total} ({percent}%) loss {loss:.4f}{lr} {rate:.1f} samples/s elapsed {_clock(elapsed)}",
              file=self.stream, flush=True)

    def note(self, text: str) -> None:
        """A result line (an evaluation) on stdout, without breaking the bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stdout)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
