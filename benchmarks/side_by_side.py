"""Running two benchmark sides as subprocesses: at the same time on separate cores, or one after the other.

Shared machines drift by tens of percent within minutes, so by default the two sides run at the
same time, each pinned to its own core with one thread (a slowdown hits both, the ratio holds);
callers swap the cores every pair. In turn: one after the other, each with every core.
Each side prints one JSON object as its last line of output.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Callable


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


def pair_arguments(description: str, rows: int, precision: str) -> argparse.ArgumentParser:
    """The options every Trainer-vs-bert_tasks benchmark takes; ``--side`` runs one side (internal)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rows", type=int, default=rows)
    parser.add_argument("--repeats", type=int, default=3, help="Trainer/bert_tasks pairs; medians are reported")
    parser.add_argument("--precision", choices=["bf16", "no"], default=precision)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--mode", choices=["side-by-side", "in-turn"], default=default_mode(),
                        help="side-by-side: both at once on separate cores (robust on noisy shared machines); in-turn: one after the other on all cores")
    parser.add_argument("--side", choices=["trainer", "bert_tasks"], help=argparse.SUPPRESS)
    return parser


Side = Callable[[argparse.Namespace, str], tuple[float, float]]  # (args, scratch folder) -> (samples/s, accuracy)


def run_side(args: argparse.Namespace, sides: dict[str, Side]) -> None:
    """In a side's subprocess: run it in a scratch folder and print its one JSON line."""
    with tempfile.TemporaryDirectory() as out:
        speed, accuracy = sides[args.side](args, out)
    print(json.dumps({"samples_per_second": speed, "accuracy": accuracy}))


def side_command(script: str, side: str, args: argparse.Namespace) -> list[str]:
    return [sys.executable, script, "--side", side, "--rows", str(args.rows), "--precision", args.precision, "--seed", str(args.seed)]
