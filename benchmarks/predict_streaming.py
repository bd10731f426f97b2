"""Peak memory of `bert-tasks predict` as the input file grows: csv input is read, predicted and written
a chunk of rows at a time, so the peak should not follow the row count.

A run is trained briefly on 512 shared SST-2 rows with a small encoder (the default checkpoint's
tokenizer and first layer (--layers), so prediction is quick and the process's memory is mostly the data
path, which is what is measured). Each input file holds the SST-2 dev sentences repeated up to
--rows rows; each prediction runs in its own process, whose peak resident memory is read from the
kernel afterwards.

    python benchmarks/predict_streaming.py [--rows 10000,100000,300000] [--layers 1]

Prints rows, rows/s, peak RSS and the peak's ratio to the smallest file's, with the row-count ratio.
"""
from __future__ import annotations

import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_data import ROOT, SST2, read_tsv  # noqa: E402

sys.path.insert(0, str(ROOT))
from cached_strategies import machine  # noqa: E402


def small_checkpoint(out: Path, layers: int) -> Path:
    """The default checkpoint cut to its first ``layers`` layers."""
    from transformers import AutoModel, AutoTokenizer

    from bert_tasks.backbone import resolve_checkpoint

    source = resolve_checkpoint("default")
    model = AutoModel.from_pretrained(source)
    model.encoder.layer = model.encoder.layer[:layers]
    model.config.num_hidden_layers = layers
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return out


def write_input(path: Path, rows: int) -> None:
    texts, _ = read_tsv(SST2 / "dev.tsv")
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sentence"])
        for index in range(rows):
            writer.writerow([texts[index % len(texts)]])


def predict_in_a_process(run: Path, source: Path, out: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one `bert-tasks predict` process."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bert_tasks", "predict", str(run), "--input", str(source), "--output", str(out),
                           "--device", "cpu", "--batch-size", "128"], capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest child so far; files grow, so it is this one


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="10000,100000,300000", help="comma-separated row counts, smallest first")
    parser.add_argument("--layers", type=int, default=1, help="encoder layers kept (compute per row; memory is the point)")
    args = parser.parse_args()
    if not (SST2 / "train.tsv").is_file():
        print(f"skipped: {SST2} not found (the shared data is needed)")
        return 0
    import bert_tasks

    sizes = [int(n) for n in args.rows.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        checkpoint = small_checkpoint(work / "small", args.layers)
        bert_tasks.train(bert_tasks.load_config("glue/sst2", [
            f"model.checkpoint={checkpoint}", f"data.train={SST2 / 'train.tsv'}", f"data.validation={SST2 / 'dev.tsv'}",
            "train.max_train_samples=512", "train.max_eval_samples=64", "train.epochs=1", f"output.dir={work}", "output.name=run"]))
        results = []
        print(f"Machine: {machine()}; {args.layers}-layer cut of the default checkpoint, fp32, batch 128, chunks of 8,192 rows", flush=True)
        print(f"{'rows':>11}{'input MB':>10}{'rows/s':>9}{'peak RSS MB':>13}{'RSS ratio':>11}{'row ratio':>11}", flush=True)
        for rows in sizes:
            source = work / f"in-{rows}.csv"
            write_input(source, rows)
            seconds, peak = predict_in_a_process(work / "run", source, work / f"out-{rows}.jsonl")
            with (work / f"out-{rows}.jsonl").open() as handle:
                assert sum(1 for _ in handle) == rows
            results.append((rows, seconds, peak, os.path.getsize(source) / 2**20))
            source.unlink()
            (work / f"out-{rows}.jsonl").unlink()
            print(f"{rows:>11,}{results[-1][3]:>10.1f}{rows / seconds:>9.0f}{peak:>13.0f}{peak / results[0][2]:>11.2f}{rows / results[0][0]:>11.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
