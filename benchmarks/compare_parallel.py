"""Wall time of the demo comparison grid (`bert-tasks compare compare/demo`, five strategies) with the
local backend (cells one after another, each using every core) against the Ray backend on a local Ray
instance with single-thread cells, as many at once as the machine has cores.

Each grid trains from scratch in a fresh folder, in its own process (`python -m bert_tasks compare`),
so both sides pay the same start-up costs; the Ray side also pays for starting Ray.

    python benchmarks/compare_parallel.py [--recipe compare/demo] [--epochs 3]

Prints both wall times, the ratio local / Ray, and whether every cell's metric matched.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_data import ROOT  # noqa: E402

sys.path.insert(0, str(ROOT))
from cached_strategies import machine  # noqa: E402


def run_grid(recipe: str, out: Path, backend: str, epochs: int) -> tuple[float, dict[str, float]]:
    """Train the grid; returns wall seconds and each cell's metric from report.json."""
    overrides = [f"output.dir={out}", f"compare.backend={backend}", f"train.epochs={epochs}", "compare.name=grid"]
    if backend == "ray":
        overrides.append("compare.cpus_per_cell=1")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bert_tasks", "compare", recipe, *overrides], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{backend} grid failed: {(done.stderr or done.stdout).strip().splitlines()[-1]}")
    report = json.loads((out / "grid" / "report.json").read_text())
    return seconds, {row["strategy"]: row["metric_mean"] for row in report["strategies"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="compare/demo")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"machine: {machine()}")
    print(f"grid: {args.recipe}, {args.epochs} epochs; local = cells in turn with {cores} threads each; "
          f"ray = {cores} single-thread cells at once")
    with tempfile.TemporaryDirectory(prefix="compare-parallel-") as tmp:
        local_seconds, local_cells = run_grid(args.recipe, Path(tmp) / "local", "local", args.epochs)
        print(f"local: {local_seconds:8.1f} s", flush=True)
        ray_seconds, ray_cells = run_grid(args.recipe, Path(tmp) / "ray", "ray", args.epochs)
        print(f"ray:   {ray_seconds:8.1f} s", flush=True)
    same = local_cells.keys() == ray_cells.keys() and all(
        local_cells[k] is not None and ray_cells[k] is not None and abs(local_cells[k] - ray_cells[k]) < 0.02 for k in local_cells)
    print(f"ratio local / ray: {local_seconds / ray_seconds:.2f}x  ({len(local_cells)} cells; "
          f"metrics {'agree within 0.02' if same else 'differ'}: local {local_cells} ray {ray_cells})")


if __name__ == "__main__":
    main()
