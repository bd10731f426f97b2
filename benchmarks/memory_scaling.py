"""Peak memory of a training run as the training data grows: rows held in memory (`data.storage=memory`)
against memory-mapped Arrow stores (`data.storage=arrow`, arrow_store.py).

Each run is `bert-tasks train` in its own process on a synthetic csv of SST-2-length sentences (5 to 40
words drawn from the default checkpoint's vocabulary, labels at random): reading, encoding and one epoch
at batch 256. The encoder is a 2-layer, 64-wide BERT built here with the default checkpoint's tokenizer,
so an epoch of a million rows takes minutes and the process's memory is mostly the data path, which is
what is measured. The peak resident set is the run's own (summary.json peak_memory_mb). A last Arrow run
repeats the largest size: its store is reused, so nothing is read or tokenised again.

    python benchmarks/memory_scaling.py [--rows 10000,100000,1000000] [--num-proc 1]

Prints the peak of each run, each path's peak relative to its smallest size next to the row ratio, and
the seconds from start to the first training step's data (read + encode) per run.
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared_data import ROOT  # noqa: E402

sys.path.insert(0, str(ROOT))
from cached_strategies import machine  # noqa: E402


def small_checkpoint(out: Path) -> Path:
    """A 2-layer, 64-wide BERT with the default checkpoint's tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from bert_tasks.backbone import resolve_checkpoint

    tokenizer = AutoTokenizer.from_pretrained(resolve_checkpoint("default"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=128)
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def write_rows(path: Path, rows: int, words: list[str], seed: int) -> None:
    generator = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        handle.write("sentence\tlabel\n")
        for _ in range(rows):
            sentence = " ".join(generator.choices(words, k=generator.randint(5, 40)))
            handle.write(f"{sentence}\t{generator.randint(0, 1)}\n")


def train_in_a_process(checkpoint: Path, train: Path, dev: Path, storage: str, out: Path, cache: Path, num_proc: int) -> tuple[float, float, float]:
    """(peak RSS MB, total seconds, training seconds) of one `bert-tasks train` process."""
    overrides = [f"model.checkpoint={checkpoint}", "data.dataset=null", f"data.train={train}", f"data.validation={dev}",
                 "data.text_column=sentence", f"data.storage={storage}", f"data.cache_dir={cache}", f"data.num_proc={num_proc}",
                 "train.epochs=1", "train.batch_size=256", "train.eval_batch_size=256", "train.learning_rate=1e-3",
                 "train.mixed_precision=no", "train.save_every=eval", "train.log_every=1000", f"output.dir={out}",
                 "output.name=run", "output.overwrite=true", "task.max_length=64"]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bert_tasks", "train", "glue/sst2", *overrides], capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{storage} run on {train.name} failed: {done.stderr[-1500:]}")
    summary = json.loads((out / "run" / "summary.json").read_text())
    return summary["peak_memory_mb"], seconds, summary["train_seconds"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="10000,100000,1000000", help="comma-separated row counts, smallest first")
    parser.add_argument("--num-proc", type=int, default=1, help="data.num_proc of the Arrow runs")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    from bert_tasks.backbone import resolve_checkpoint

    sizes = [int(n) for n in args.rows.split(",")]
    vocab = [w for w in AutoTokenizer.from_pretrained(resolve_checkpoint("default")).get_vocab() if w.isalpha() and w.islower() and len(w) > 2]
    print(f"machine: {machine()}")
    print(f"synthetic SST-2-length rows (5-40 words), 2-layer 64-wide BERT, batch 256, 1 epoch, fp32; num_proc {args.num_proc}")
    with tempfile.TemporaryDirectory(prefix="memory-scaling-") as folder:
        work = Path(folder)
        checkpoint = small_checkpoint(work / "checkpoint")
        dev = work / "dev.tsv"
        write_rows(dev, 500, vocab, seed=0)
        results: dict[str, list[tuple[int, float, float, float]]] = {"memory": [], "arrow": []}
        for rows in sizes:
            train = work / f"train-{rows}.tsv"
            write_rows(train, rows, vocab, seed=rows)
            for storage in ("memory", "arrow"):
                peak, seconds, train_seconds = train_in_a_process(checkpoint, train, dev, storage, work / f"{storage}-{rows}", work / "cache", args.num_proc)
                results[storage].append((rows, peak, seconds, train_seconds))
                print(f"{storage:>6} {rows:>10,} rows: peak RSS {peak:8.1f} MB, {seconds:7.1f} s in all, {train_seconds:7.1f} s training", flush=True)
        peak, seconds, train_seconds = train_in_a_process(checkpoint, work / f"train-{sizes[-1]}.tsv", dev, "arrow", work / "again", work / "cache", args.num_proc)
        print(f" arrow {sizes[-1]:>10,} rows again (store reused): peak RSS {peak:8.1f} MB, {seconds:7.1f} s in all, "
              f"{seconds - train_seconds:.1f} s before/after training vs {results['arrow'][-1][2] - results['arrow'][-1][3]:.1f} s the first time")
        first = sizes[0]
        print("\nrows       row ratio  memory peak  ratio   arrow peak  ratio  memory/arrow")
        for (rows, mem, _, _), (_, arr, _, _) in zip(results["memory"], results["arrow"]):
            print(f"{rows:>10,} {rows / first:>7.0f}x {mem:>10.1f} MB {mem / results['memory'][0][1]:>5.2f}x "
                  f"{arr:>10.1f} MB {arr / results['arrow'][0][1]:>5.2f}x  {mem / arr:>6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
