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
import statistics
import subprocess
import sys
import tempfile
from typing import Callable, Union


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


# (args, scratch folder) -> (samples/s, accuracy), or a dict with those two keys and any others to report
Side = Callable[[argparse.Namespace, str], Union[tuple[float, float], dict]]


def run_side(args: argparse.Namespace, sides: dict[str, Side]) -> None:
    """In a side's subprocess: run it in a scratch folder and print its one JSON line."""
    with tempfile.TemporaryDirectory() as out:
        result = sides[args.side](args, out)
    if not isinstance(result, dict):
        result = {"samples_per_second": result[0], "accuracy": result[1]}
    print(json.dumps(result))


def side_command(script: str, side: str, args: argparse.Namespace) -> list[str]:
    """The subprocess running one side, with the pair's options (and those a benchmark names in ``args.forward``)."""
    command = [sys.executable, script, "--side", side, "--rows", str(args.rows), "--precision", args.precision, "--seed", str(args.seed)]
    for name in getattr(args, "forward", ()):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    return command


def run_pairs(script: str, args: argparse.Namespace) -> list[tuple[dict, dict]]:
    """(Trainer, bert_tasks) results per pair, printed as they come; cores / order swap every pair so
    neither side is favoured by a core or by going first."""
    pairs = []
    for repeat in range(args.repeats):
        results = run_pair({side: side_command(script, side, args) for side in ("trainer", "bert_tasks")}, args.mode, swap=repeat % 2 == 1)
        theirs, ours = results["trainer"], results["bert_tasks"]
        pairs.append((theirs, ours))
        print(f"pair {repeat + 1}: Trainer {theirs['samples_per_second']:.1f} samples/s, bert_tasks {ours['samples_per_second']:.1f} samples/s, "
              f"ratio {ours['samples_per_second'] / theirs['samples_per_second']:.2f}", flush=True)
    return pairs


def medians(pairs: list[tuple[dict, dict]]) -> dict[str, float]:
    """Medians over pairs: each side's samples/s and accuracy, and the per-pair speed ratio."""
    median = lambda values: statistics.median(list(values))  # noqa: E731
    return {
        "trainer_speed": median(t["samples_per_second"] for t, _ in pairs), "ours_speed": median(o["samples_per_second"] for _, o in pairs),
        "trainer_accuracy": median(t["accuracy"] for t, _ in pairs), "ours_accuracy": median(o["accuracy"] for _, o in pairs),
        "ratio": median(o["samples_per_second"] / t["samples_per_second"] for t, o in pairs),
    }


def print_results(m: dict[str, float], what: str, accuracy: str, args: argparse.Namespace, threads: int, machine: str) -> None:
    """The machine, the job, both sides' medians and the ratio."""
    how = "1 thread each, side by side on separate cores" if args.mode == "side-by-side" else f"{threads} threads, in turn"
    print(f"Machine: {machine}")
    print(f"{what}, batch 32, 1 epoch, precision {args.precision}, all-MiniLM-L6-v2, {how}, {args.repeats} pairs")
    print(f"{'':<12}{'samples/s':>10}{accuracy:>18}")
    print(f"{'Trainer':<12}{m['trainer_speed']:>10.1f}{m['trainer_accuracy']:>18.4f}")
    print(f"{'bert_tasks':<12}{m['ours_speed']:>10.1f}{m['ours_accuracy']:>18.4f}")
    print(f"speed ratio bert_tasks / Trainer (median of pairs): {m['ratio']:.2f}")
    print(f"accuracy difference (points): {100 * (m['ours_accuracy'] - m['trainer_accuracy']):+.2f}")


def benchmark_main(script: str, args: argparse.Namespace, sides: dict[str, Side], data: "os.PathLike[str]", what: str, accuracy: str, threads: int, machine: str) -> int:
    """A whole benchmark: skip without the shared data; in a side's subprocess run that side; else run the pairs and print."""
    if not os.path.isfile(data):
        print(f"skipped: {data} not found (the shared data is needed)")
        return 0
    if args.side:
        run_side(args, sides)
        return 0
    print_results(medians(run_pairs(script, args)), what, accuracy, args, threads, machine)
    return 0
