"""Every benchmark script still imports and parses its arguments: they run rarely (long, real data), so a
renamed function they use would otherwise surface only on the day someone needs the figure."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

# One process for all scripts (the heavy imports are paid once): each runs as __main__ with --help.
DRIVER = """
import runpy, sys
failed = []
for path in sys.argv[1:]:
    sys.argv = [path, "--help"]
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as stop:
        if stop.code not in (0, None):
            failed.append(f"{path}: exit {stop.code}")
    except Exception as error:
        failed.append(f"{path}: {type(error).__name__}: {error}")
print("FAILED " + " | ".join(failed) if failed else "ALL OK")
"""


def test_every_benchmark_answers_help() -> None:
    scripts = sorted(str(p) for p in BENCHMARKS.glob("*.py"))
    assert len(scripts) > 10
    done = subprocess.run([sys.executable, "-c", DRIVER, *scripts], capture_output=True, text=True, timeout=600,
                          cwd=BENCHMARKS.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "ALL OK", done.stdout[-2000:]
