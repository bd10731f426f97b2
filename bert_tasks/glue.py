"""What bert_tasks knows about the GLUE benchmark: its tasks, how each is scored in the results
table, and the leaderboard's submission files (names, header, label spellings).

Facts from the GLUE paper (Wang et al., 2018) and the gluebenchmark.com submission format: each
task's score is the mean of its metrics (MRPC and QQP: F1 and accuracy; STS-B: Pearson and
Spearman; MNLI: matched and mismatched accuracy), scores are in percent, and the GLUE score is the
mean over tasks. A submission is one ``index<TAB>prediction`` TSV per test set, zipped together:
label names for the NLI tasks, 0/1 for the binary ones, a similarity score for STS-B.
"""
from __future__ import annotations

import csv
import statistics
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from .atomic_files import replacing


@dataclass(frozen=True)
class TestSet:
    file: str  # the submission file name the leaderboard expects, e.g. 'MNLI-m.tsv'
    split: str  # its Hub split, e.g. 'test_matched'
    config: Optional[str] = None  # another Hub config of glue (AX: 'ax', predicted by the MNLI model); None: the task's own


@dataclass(frozen=True)
class GlueTask:
    name: str  # the Hub config and the bundled recipe glue/<name>
    title: str  # the column heading of the GLUE table
    metrics: tuple[tuple[str, str], ...]  # (heading, metric name in the run's summary); their mean is the task's score
    validation: tuple[tuple[Optional[str], str], ...]  # (set name or None, Hub split) the run evaluates
    tests: tuple[TestSet, ...]
    labels: tuple[str, ...] = ()  # the Hub's label names in index order (ClassLabel); () for regression
    spelled_as_names: bool = False  # the submission spells labels as names (NLI), else as their index


TASKS: dict[str, GlueTask] = {task.name: task for task in (
    GlueTask("cola", "CoLA", (("MCC", "matthews"),), ((None, "validation"),), (TestSet("CoLA.tsv", "test"),), ("unacceptable", "acceptable")),
    GlueTask("sst2", "SST-2", (("Acc", "accuracy"),), ((None, "validation"),), (TestSet("SST-2.tsv", "test"),), ("negative", "positive")),
    GlueTask("mrpc", "MRPC", (("F1", "f1"), ("Acc", "accuracy")), ((None, "validation"),), (TestSet("MRPC.tsv", "test"),), ("not_equivalent", "equivalent")),
    GlueTask("stsb", "STS-B", (("Pearson", "pearson"), ("Spearman", "spearman")), ((None, "validation"),), (TestSet("STS-B.tsv", "test"),)),
    GlueTask("qqp", "QQP", (("F1", "f1"), ("Acc", "accuracy")), ((None, "validation"),), (TestSet("QQP.tsv", "test"),), ("not_duplicate", "duplicate")),
    GlueTask("mnli", "MNLI", (("m", "matched/accuracy"), ("mm", "mismatched/accuracy")),
             (("matched", "validation_matched"), ("mismatched", "validation_mismatched")),
             (TestSet("MNLI-m.tsv", "test_matched"), TestSet("MNLI-mm.tsv", "test_mismatched"), TestSet("AX.tsv", "test", "ax")),
             ("entailment", "neutral", "contradiction"), spelled_as_names=True),
    GlueTask("qnli", "QNLI", (("Acc", "accuracy"),), ((None, "validation"),), (TestSet("QNLI.tsv", "test"),), ("entailment", "not_entailment"), True),
    GlueTask("rte", "RTE", (("Acc", "accuracy"),), ((None, "validation"),), (TestSet("RTE.tsv", "test"),), ("entailment", "not_entailment"), True),
    GlueTask("wnli", "WNLI", (("Acc", "accuracy"),), ((None, "validation"),), (TestSet("WNLI.tsv", "test"),), ("not_entailment", "entailment")),
)}


def task_score(task: GlueTask, results: dict[str, float]) -> Optional[dict[str, float]]:
    """The task's metrics in percent (heading -> value) and their mean under 'score'; None when one is missing."""
    values = {}
    for heading, metric in task.metrics:
        value = results.get(metric)
        if not isinstance(value, (int, float)):
            return None
        values[heading] = 100.0 * float(value)
    values["score"] = statistics.fmean(values.values())
    return values


def glue_table(scores: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The table of the tasks that have scores: per task its metrics and score, and the GLUE average over them."""
    rows = [{"task": TASKS[name].title, **values} for name, values in scores.items()]
    average = statistics.fmean(values["score"] for values in scores.values()) if scores else None
    return {"tasks": rows, "average": average, "tasks_in_average": len(scores), "tasks_in_glue": len(TASKS)}


def table_markdown(table: dict[str, Any], order: Sequence[str]) -> str:
    """One row in the leaderboard's layout: a column per task ('F1/Acc' where a task has two metrics), then the average."""
    by_title = {row["task"]: row for row in table["tasks"]}
    headings, cells = [], []
    for name in order:
        task = TASKS[name]
        row = by_title.get(task.title)
        if task.name == "mnli":
            headings += ["MNLI-m", "MNLI-mm"]
            cells += [f"{row['m']:.1f}", f"{row['mm']:.1f}"] if row else ["-", "-"]
            continue
        headings.append(f"{task.title} ({'/'.join(h for h, _ in task.metrics)})" if len(task.metrics) > 1 else f"{task.title} ({task.metrics[0][0]})")
        cells.append("/".join(f"{row[h]:.1f}" for h, _ in task.metrics) if row else "-")
    average = "-" if table["average"] is None else f"{table['average']:.1f}"
    headings.append(f"Average ({table['tasks_in_average']} of {table['tasks_in_glue']} tasks)")
    cells.append(average)
    return "\n".join(["| " + " | ".join(headings) + " |", "|" + "---|" * len(headings), "| " + " | ".join(cells) + " |"])


def write_table_csv(table: dict[str, Any], path: Path) -> None:
    """Long form: task, metric, value (percent); the average last."""
    with replacing(path) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["task", "metric", "value"])
        for row in table["tasks"]:
            for key, value in row.items():
                if key != "task":
                    writer.writerow([row["task"], key, f"{value:.4f}"])
        if table["average"] is not None:
            writer.writerow(["average", "score", f"{table['average']:.4f}"])


def spell(task: GlueTask, prediction: dict[str, Any]) -> str:
    """One prediction as the leaderboard spells it: STS-B a score in [0, 5]; NLI a label name; else the label's index."""
    if not task.labels:
        return f"{min(5.0, max(0.0, float(prediction['score']))):.3f}"
    label = str(prediction["label"])
    if label.isdigit():  # the run learnt the labels as numbers (a file without label names): the Hub's index
        index = int(label)
        if not 0 <= index < len(task.labels):
            raise ValueError(f"label {label!r} is not an index of the {task.title} labels {list(task.labels)}")
        return task.labels[index] if task.spelled_as_names else label
    if label not in task.labels:
        raise ValueError(f"label {label!r} is not one of the {task.title} labels {list(task.labels)}")
    return label if task.spelled_as_names else str(task.labels.index(label))


def write_submission_file(task: GlueTask, indices: Sequence[int], predictions: Sequence[dict[str, Any]], path: Path) -> None:
    """``index<TAB>prediction`` rows, in test-set order."""
    with replacing(path) as temporary, temporary.open("w", newline="") as handle:
        handle.write("index\tprediction\n")
        for index, prediction in zip(indices, predictions):
            handle.write(f"{index}\t{spell(task, prediction)}\n")


def zip_submission(folder: Path, out: Path) -> list[str]:
    """Every submission TSV of ``folder`` into ``out`` at the archive's top level (as the leaderboard wants); returns the names."""
    names = sorted(p.name for p in folder.glob("*.tsv"))
    with replacing(out) as temporary:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name in names:
                archive.write(folder / name, arcname=name)
    return names
