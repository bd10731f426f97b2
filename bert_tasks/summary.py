"""The figures a finished run reports (RUN_DIR/summary.json) and a table of several runs."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from .atomic_files import write_json
from .config import RunConfig
from .eval_sets import eval_sets, on_each_set


@dataclass
class RunSummary:
    run_dir: str
    task: str
    strategy: str
    best_metric: str
    best_value: Optional[float]
    best_step: Optional[int]
    eval: dict[str, float] = field(default_factory=dict)
    trainable_parameters: int = 0
    total_parameters: int = 0
    train_seconds: float = 0.0
    train_samples_per_second: float = 0.0
    steps: int = 0
    processes: int = 1
    checkpoint_bytes: int = 0  # size of the best checkpoint's weights on disk
    peak_memory_mb: float = 0.0  # peak of the training process (GPU: allocated CUDA memory; CPU: resident set)
    learning_rate: float = 0.0
    seed: int = 0
    frozen_cache: dict[str, Any] = field(default_factory=dict)  # cached or not, why, the cut, the stores (frozen_cache.json)
    precision: str = ""  # what ran: no | bf16 | fp16 (train.mixed_precision=auto resolved on this machine)
    precision_reason: str = ""
    step_breakdown_ms: dict[str, float] = field(default_factory=dict)  # train.step_breakdown=true: ms per optimiser step per phase
    eval_sets: list[str] = field(default_factory=list)  # names of the evaluation sets (metrics 'name/metric'); empty: one unnamed set
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)  # per set: the trivial baseline's 'name' and scores (sanity.py)
    warnings: list[str] = field(default_factory=list)  # what the last evaluation found the model has not learned

    @classmethod
    def create(
        cls, config: RunConfig, strategy: str, best_metric: str, state: Any, trainable: int, total: int, processes: int, checkpoint_bytes: int,
        peak_memory_mb: float = 0.0, frozen_cache: Optional[dict[str, Any]] = None, precision: Optional[Any] = None,
        step_breakdown_ms: Optional[dict[str, float]] = None, baselines: Optional[dict[str, dict[str, Any]]] = None,
        warnings: Optional[list[str]] = None,
    ) -> "RunSummary":
        seconds = state.train_seconds
        return cls(
            run_dir=str(config.run_dir), task=config.task.name, strategy=strategy, best_metric=best_metric,
            best_value=state.best_value, best_step=state.best_step, eval=dict(state.best_metrics),
            trainable_parameters=trainable, total_parameters=total, train_seconds=round(seconds, 2),
            train_samples_per_second=round(state.samples_seen / seconds, 2) if seconds > 0 else 0.0,
            steps=state.global_step, processes=processes, checkpoint_bytes=checkpoint_bytes, peak_memory_mb=round(peak_memory_mb, 1),
            learning_rate=config.train.learning_rate, seed=config.train.seed, frozen_cache=dict(frozen_cache or {}),
            precision=precision.precision if precision else "", precision_reason=precision.reason if precision else "",
            step_breakdown_ms=dict(step_breakdown_ms or {}), eval_sets=[s.name for s in eval_sets(config.data) if s.name],
            baselines=dict(baselines or {}), warnings=list(warnings or []),
        )

    @property
    def cache_build_seconds(self) -> float:
        """Seconds spent computing frozen stores in this run (0 when they were reused or not used)."""
        return sum(float(store.get("build_seconds", 0.0)) for store in self.frozen_stores)

    @property
    def frozen_stores(self) -> list[dict[str, Any]]:
        """The records of this run's frozen-cache stores: training data and each evaluation set."""
        return [value for value in self.frozen_cache.values() if isinstance(value, dict) and "how" in value]

    @property
    def trainable_percent(self) -> float:
        return 100.0 * self.trainable_parameters / max(self.total_parameters, 1)

    def save(self, run_dir: Path) -> None:
        write_json(Path(run_dir) / "summary.json", asdict(self))

    @classmethod
    def load(cls, run_dir: Path) -> "RunSummary":
        path = Path(run_dir) / "summary.json"
        if not path.is_file():
            from .errors import BertTasksError

            raise BertTasksError(f"{run_dir}: no summary.json (not a finished run)")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(path.read_text()).items() if k in known})


def format_table(summaries: list[RunSummary]) -> str:
    """A plain-text table: one row per run."""
    others = [m for m in dict.fromkeys(m for s in summaries for m in on_each_set(s.best_metric, s.eval_sets)) if m not in {s.best_metric for s in summaries}]
    header = ["run", "strategy", "metric", "value", *others, "trainable", "% of total", "train s", "samples/s", "peak MB", "size MB"]
    rows = [
        [
            Path(s.run_dir).name, s.strategy, s.best_metric,
            "-" if s.best_value is None else f"{s.best_value:.4f}",
            *(f"{s.eval[m]:.4f}" if isinstance(s.eval.get(m), (int, float)) else "-" for m in others),
            f"{s.trainable_parameters:,}", f"{s.trainable_percent:.2f}%", f"{s.train_seconds:.1f}", f"{s.train_samples_per_second:.1f}",
            f"{s.peak_memory_mb:.0f}", f"{s.checkpoint_bytes / 1e6:.2f}",
        ]
        for s in summaries
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
