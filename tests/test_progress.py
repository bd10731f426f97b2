"""Progress output: a bar on a terminal, one plain line per logged step anywhere else."""
from __future__ import annotations

import io

from bert_tasks.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(stream) -> str:
    progress = Progress("demo", total=4, initial=0, samples=0, enabled=True, stream=stream)
    for step in range(1, 5):
        progress.step(step, samples=16 * step, loss=0.5 if step % 2 == 0 else None, learning_rate=1e-4)
    progress.close()
    return stream.getvalue()


def test_plain_lines_when_not_a_terminal():
    lines = _run(io.StringIO()).splitlines()
    assert [line.split(" loss ")[0] for line in lines] == ["demo: step 2/4 (50%)", "demo: step 4/4 (100%)"]
    assert all(" loss 0.5000 lr 1.00e-04 " in line and " samples/s elapsed 0:00:0" in line for line in lines)


def test_a_bar_on_a_terminal():
    shown = _run(Terminal())
    assert "\r" in shown and "4/4" in shown and "demo: step" not in shown
