"""The report of a comparison: report.md / .csv / .json and two plots.

For each strategy: the learning rate whose mean over seeds is best, that mean ± the sample
standard deviation over seeds, and what it costs (trainable parameters, train time, speed,
peak memory, checkpoint size). Learning rates are chosen on the same evaluation split the
metric is reported on, as GLUE-style comparisons do; the report says so.
"""
from __future__ import annotations

import csv
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .cell_asha import stopped
from .comparison import Cell, Comparison
from .eval_sets import on_each_set
from .metrics import greater_is_better
from .rundir import SUMMARY_FILE, read_metrics
from .summary import RunSummary

REPORT_COLUMNS = (
    "strategy", "best_lr", "metric_mean", "metric_std", "seeds", "trainable_parameters", "trainable_percent",
    "train_seconds", "samples_per_second", "peak_memory_mb", "checkpoint_mb",
    "frozen_cache", "cache_build_seconds", "uncached_train_seconds_estimate",
)


@dataclass
class StrategyResult:
    label: str
    family: str
    metric: str
    best_lr: float
    values: list[float]  # the metric of each seed at the best learning rate
    by_lr: dict[float, list[float]]
    runs: list[RunSummary]  # the runs at the best learning rate
    run_dirs: list[Path]
    other_sets: tuple[str, ...] = ()  # the same metric on the run's other evaluation sets ('mismatched/accuracy', ...)

    @property
    def at_grid_edge(self) -> bool:
        """The best rate is the lowest or highest of three or more tried: a wider grid may do better.
        (With two rates the best is always at an edge, so it says nothing.)"""
        return len(self.by_lr) > 2 and self.best_lr in (min(self.by_lr), max(self.by_lr))

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def row(self) -> dict[str, Any]:
        runs = self.runs
        return {
            "strategy": self.label,
            "best_lr": self.best_lr,
            "metric_mean": round(self.mean, 4),
            "metric_std": round(self.std, 4),
            "seeds": len(self.values),
            "trainable_parameters": runs[0].trainable_parameters,
            "trainable_percent": round(runs[0].trainable_percent, 3),
            "train_seconds": round(statistics.fmean(r.train_seconds for r in runs), 1),
            "samples_per_second": round(statistics.fmean(r.train_samples_per_second for r in runs), 2),
            "peak_memory_mb": round(max(r.peak_memory_mb for r in runs), 0),
            "checkpoint_mb": round(runs[0].checkpoint_bytes / 1e6, 2),
            # the frozen-work cache: how each run got its store (built here / reused from another cell / off)
            "frozen_cache": "/".join(sorted({r.frozen_cache.get("train", {}).get("how", "off") for r in runs})),
            "cache_build_seconds": round(statistics.fmean(r.cache_build_seconds for r in runs), 1),
            "uncached_train_seconds_estimate": round(statistics.fmean(uncached_seconds(r) for r in runs), 1),
            **{metric: self.other_mean(metric) for metric in self.other_sets},
        }

    def other_mean(self, metric: str) -> Optional[float]:
        """Mean over seeds of ``metric`` (another set's) at the learning rate chosen on the report's metric."""
        values = [r.eval[metric] for r in self.runs if isinstance(r.eval.get(metric), (int, float))]
        return round(statistics.fmean(values), 4) if values else None


def uncached_seconds(summary: RunSummary) -> float:
    """Training time without the frozen cache: measured when it was off, else the run's estimate."""
    return float(summary.frozen_cache.get("uncached_train_seconds_estimate", summary.train_seconds))


def metric_of(summary: RunSummary, metric: Optional[str]) -> Optional[float]:
    if metric is None:
        return summary.best_value
    return summary.eval.get(metric)


def collect(comparison: Comparison) -> tuple[str, list[StrategyResult]]:
    """(metric name, one result per strategy that has finished cells), in recipe order."""
    finished: dict[str, list[tuple[Cell, RunSummary, Path]]] = {}
    for cell in comparison.cells:
        run_dir = comparison.run_dir(cell)
        if (run_dir / SUMMARY_FILE).is_file():
            finished.setdefault(cell.label, []).append((cell, RunSummary.load(run_dir), run_dir))
    metric = comparison.config.metric
    name = metric or next((s.best_metric for runs in finished.values() for _, s, _ in runs), "metric")
    higher = greater_is_better(name)
    set_names = next((s.eval_sets for runs in finished.values() for _, s, _ in runs), [])
    others = tuple(m for m in on_each_set(name, set_names) if m != name)
    results = []
    for label, runs in finished.items():
        by_lr: dict[float, list[tuple[float, RunSummary, Path]]] = {}
        for cell, summary, run_dir in runs:
            value = metric_of(summary, metric)
            if value is not None:
                by_lr.setdefault(cell.learning_rate, []).append((value, summary, run_dir))
        if not by_lr:
            continue
        best = (max if higher else min)(by_lr, key=lambda rate: statistics.fmean(v for v, _, _ in by_lr[rate]))
        chosen = by_lr[best]
        results.append(StrategyResult(
            label, runs[0][0].family, name, best, [v for v, _, _ in chosen],
            {rate: [v for v, _, _ in entries] for rate, entries in sorted(by_lr.items())},
            [s for _, s, _ in chosen], [d for _, _, d in chosen], others,
        ))
    return name, results


def format_markdown_table(metric: str, results: list[StrategyResult]) -> str:
    others = results[0].other_sets if results else ()
    header = (f"| strategy | best lr | {metric} (mean ± std) | seeds | {''.join(f'{m} | ' for m in others)}trainable | % | train s | samples/s "
              "| peak MB | size MB | frozen cache | cache build s | train s without cache |")
    lines = [header, "|" + "---|" * (13 + len(others))]
    for result in results:
        row = result.row()
        edge = " (grid edge)" if result.at_grid_edge else ""
        lines.append(
            f"| {row['strategy']} | {row['best_lr']:g}{edge} | {row['metric_mean']:.4f} ± {row['metric_std']:.4f} | {row['seeds']} "
            + "".join("| - " if row[m] is None else f"| {row[m]:.4f} " for m in others)
            + f"| {row['trainable_parameters']:,} | {row['trainable_percent']:.2f} | {row['train_seconds']:.1f} "
            f"| {row['samples_per_second']:.1f} | {row['peak_memory_mb']:.0f} | {row['checkpoint_mb']:.2f} "
            f"| {row['frozen_cache']} | {row['cache_build_seconds']:.1f} | {row['uncached_train_seconds_estimate']:.1f} |"
        )
    return "\n".join(lines)


def cache_line(comparison: Comparison) -> str:
    """All finished cells' time with the frozen cache (training + store builds) against without it
    (measured for cells that ran without it, estimated for cached ones: one frozen pass per epoch)."""
    summaries = [RunSummary.load(comparison.run_dir(c)) for c in comparison.cells if (comparison.run_dir(c) / SUMMARY_FILE).is_file()]
    with_cache = sum(s.train_seconds + s.cache_build_seconds for s in summaries)
    without = sum(uncached_seconds(s) for s in summaries)
    built = sum(store["how"] == "built" for s in summaries for store in s.frozen_stores)
    reused = sum(store["how"] == "reused" for s in summaries for store in s.frozen_stores)
    return (f"Frozen-work cache: {built} stores built, {reused} reused by other cells. Training time of all cells: {with_cache:,.0f} s with the "
            f"cache (builds included), {without:,.0f} s without it (estimated: one more frozen pass per epoch per cached cell)"
            + (f", {without / with_cache:.2f}x." if with_cache > 0 else "."))


def write_report(comparison: Comparison, failures: Optional[dict[str, str]] = None) -> Optional[str]:
    """Write report.md/.csv/.json and the plots into the comparison folder; returns the Markdown table.
    ``failures``: run directory -> error of the cells that failed in this call (listed in the report)."""
    metric, results = collect(comparison)
    root = comparison.root
    done = sum((comparison.run_dir(c) / SUMMARY_FILE).is_file() for c in comparison.cells)
    failed = [(cell, failures[str(comparison.run_dir(cell))]) for cell in comparison.cells if str(comparison.run_dir(cell)) in (failures or {})]
    halted = [(cell, info) for cell in comparison.cells for info in [stopped(comparison.run_dir(cell))] if info is not None]
    if not results:
        return None
    with (root / "report.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*REPORT_COLUMNS, *results[0].other_sets])
        writer.writeheader()
        writer.writerows(result.row() for result in results)
    report = {
        "metric": metric,
        "cells_finished": done,
        "cells_total": len(comparison.cells),
        "strategies": [{**r.row(), "family": r.family, "best_lr_at_grid_edge": r.at_grid_edge, "values": r.values, "by_learning_rate": {f"{k:g}": v for k, v in r.by_lr.items()},
                        "run_dirs": [str(d) for d in r.run_dirs]} for r in results],
        "failed_cells": [{"strategy": c.label, "learning_rate": c.learning_rate, "seed": c.seed, "error": e} for c, e in failed],
        "stopped_cells": [{"strategy": c.label, "learning_rate": c.learning_rate, "seed": c.seed, **info} for c, info in halted],
    }
    (root / "report.json").write_text(json.dumps(report, indent=2))
    plot_metric_vs_parameters(metric, results, root / "metric_vs_parameters.png")
    plot_learning_curves(metric, results, root / "learning_curves.png")
    table = format_markdown_table(metric, results)
    grid = ["| strategy | learning rate: mean over seeds |", "|---|---|"]
    for result in results:
        cells = ", ".join(f"{rate:g}: {statistics.fmean(values):.4f}" for rate, values in result.by_lr.items())
        grid.append(f"| {result.label} | {cells} |")
    text = "\n".join([
        f"# Comparison: {root.name}",
        "",
        f"{done} of {len(comparison.cells)} cells finished. Metric: `{metric}` on the evaluation split, best checkpoint of each run; "
        f"each strategy at the learning rate with the best mean over seeds {', '.join(map(str, comparison.config.seeds))} (chosen on that same split). "
        "Peak MB is the training process's peak (resident set on CPU, allocated memory on a GPU); size MB is the saved checkpoint.",
        "",
        table,
        "",
        cache_line(comparison),
        "",
        *(["## Failed cells", "", "| strategy | lr | seed | error |", "|---|---|---|---|",
           *(f"| {c.label} | {c.learning_rate:g} | {c.seed} | {e.replace('|', '/')[:300]} |" for c, e in failed), ""] if failed else []),
        *(["## Stopped early (ASHA)", "", "Their learning rates trailed the other cells of the strategy; they take no part in the table above.", "",
           "| strategy | lr | seed | evaluations | last value |", "|---|---|---|---|---|",
           *(f"| {c.label} | {c.learning_rate:g} | {c.seed} | {len(i['evaluations'])} | {i['evaluations'][-1] if i['evaluations'] else float('nan'):.4f} |" for c, i in halted), ""]
          if halted else []),
        "## Learning-rate grid",
        "",
        *grid,
        "",
        "![metric against trainable parameters](metric_vs_parameters.png)",
        "",
        "![learning curves](learning_curves.png)",
        "",
    ])
    (root / "report.md").write_text(text)
    return table


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metric_vs_parameters(metric: str, results: list[StrategyResult], path: Path) -> None:
    """Metric against trainable parameters (log axis), one line per kind of strategy, as in
    Houlsby et al. (2019) comparing adapters of several sizes with tuning the top layers."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    families: dict[str, list[StrategyResult]] = {}
    for result in results:
        families.setdefault(result.family, []).append(result)
    for family, members in families.items():
        members = sorted(members, key=lambda r: r.runs[0].trainable_parameters)
        xs = [r.runs[0].trainable_parameters for r in members]
        axes.errorbar(xs, [r.mean for r in members], yerr=[r.std for r in members], marker="o", capsize=3, label=family,
                      linestyle="-" if len(members) > 1 else "none")
        for result, x in zip(members, xs):
            short = result.label.split(":", 1)[1] if ":" in result.label else result.label
            axes.annotate(short, (x, result.mean), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axes.set_xscale("log")
    axes.set_xlabel("trainable parameters (log scale)")
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} against trainable parameters (mean ± std over seeds)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_learning_curves(metric: str, results: list[StrategyResult], path: Path) -> None:
    """Evaluation metric against training step, each strategy at its best learning rate (mean over seeds)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for result in results:
        curves: dict[int, list[float]] = {}
        for run_dir in result.run_dirs:
            for event in read_metrics(run_dir):
                if event.get("event") == "eval" and metric in event:
                    curves.setdefault(event["step"], []).append(event[metric])
        steps = sorted(curves)
        if steps:
            axes.plot(steps, [statistics.fmean(curves[s]) for s in steps], marker=".", label=f"{result.label} (lr {result.best_lr:g})")
    axes.set_xlabel("optimiser step")
    axes.set_ylabel(metric)
    axes.set_title("Learning curves (evaluation metric, mean over seeds)")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
