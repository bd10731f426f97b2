"""Running two benchmark sides as subprocesses: at the same time on separate cores, or one after the other.

Shared machines drift by tens of percent within minutes, so by default the two sides run at the
same time, each pinned to its own core with one thread (a slowdown hits both, the ratio holds);
callers swap the cores every pair. In turn: one after the other, each with every core.
Each side prints one JSON object as its last line of output.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess


def default_mode() -> str:
    return "side-by-side" if shutil.which("taskset") and (os.cpu_count() or 1) >= 2 else "in-turn"


def _result(done: subprocess.CompletedProcess, side: str) -> dict:
    if done.returncode != 0:
        raise SystemExit(f"{side} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_pair(commands: dict[str, list[str]], mode: str, swap: bool) -> dict[str, dict]:
    """Both sides' results. ``swap`` flips which side gets core 0 (side by side) or goes first (in turn)."""
    sides = list(commands)[::-1] if swap else list(commands)
    if mode == "in-turn":
        return {side: _result(subprocess.run(commands[side], capture_output=True, text=True), side) for side in sides}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    running = {side: subprocess.Popen(["taskset", "-c", str(core), *commands[side]], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for core, side in enumerate(sides)}
    results = {}
    for side, process in running.items():
        out, err = process.communicate()
        results[side] = _result(subprocess.CompletedProcess(process.args, process.returncode, out, err), side)
    return results
