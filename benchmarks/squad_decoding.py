"""Span decoding speed: the vectorised n-best search against a plain loop over every (start, end)
pair, on the windows of the 1,988 evaluation questions of the agreed SQuAD v1.1 split.

The windows are the real ones (default tokenizer, max_length 384, doc_stride 128, offsets);
the start/end logits come from a trained run (--run RUN_DIR) or are seeded random numbers
(decoding time does not depend on their values). Both searches return the n-best spans of
each question; the script checks they agree and prints both times and the ratio.

    python benchmarks/squad_decoding.py [--run RUN_DIR] [--n-best 20] [--max-answer-length 30]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SQUAD = ROOT.parent / "shared" / "data" / "squad_v1.1" / "dev-v1.1.json"
sys.path.insert(0, str(ROOT))

import bert_tasks  # noqa: E402
from bert_tasks.assembly import build_task  # noqa: E402
from bert_tasks.backbone import load_tokenizer  # noqa: E402
from bert_tasks.data import load_split  # noqa: E402
from bert_tasks.tasks.span_decoding import best_spans  # noqa: E402


def windows_and_logits(run: str | None) -> tuple[list, int]:
    split = load_split("validation", f"{SQUAD}[8582:]")
    if run:
        predictor = bert_tasks.load(run)
        task = predictor.task
        data = task.encode(split)
        import torch

        from bert_tasks.evaluation import eval_loader

        rows: list = [None] * len(data)
        with torch.no_grad():
            for batch in eval_loader(data, task, 64):
                for index, row in zip(batch["index"].tolist(), predictor.model(**batch["inputs"]).float().numpy()):
                    rows[index] = row[: data.lengths[index]]
    else:
        config = bert_tasks.load_config("squad", ["data.dataset=null"])
        task = build_task(config, load_tokenizer("default"))
        data = task.encode(split)
        rng = np.random.default_rng(0)
        rows = [rng.normal(size=(length, 2)).astype(np.float32) for length in data.lengths]
    per_question: list[list] = [[] for _ in range(len(split))]
    for row, logits in enumerate(rows):
        per_question[data.meta["row_example"][row]].append((logits, data.meta["row_offsets"][row]))
    return per_question, len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a trained span_qa run directory (default: random logits)")
    parser.add_argument("--n-best", type=int, default=20)
    parser.add_argument("--max-answer-length", type=int, default=30)
    args = parser.parse_args()
    if not SQUAD.is_file():
        sys.exit(f"needs the shared SQuAD file {SQUAD}")
    questions, windows = windows_and_logits(args.run)
    timings = {}
    results = {}
    for name, by_pairs in (("vectorised", False), ("pair loop", True)):
        started = time.perf_counter()
        results[name] = [best_spans(w, args.n_best, args.max_answer_length, by_pairs=by_pairs)[0] for w in questions]
        timings[name] = time.perf_counter() - started
    same = sum([(s.start, s.end) for s in a] == [(s.start, s.end) for s in b] for a, b in zip(results["vectorised"], results["pair loop"]))
    print(f"{len(questions)} questions, {windows} windows, n_best {args.n_best}, max_answer_length {args.max_answer_length}")
    for name, seconds in timings.items():
        print(f"{name:<11} {seconds:8.3f} s  ({1000 * seconds / len(questions):.2f} ms per question)")
    print(f"ratio pair loop / vectorised: {timings['pair loop'] / timings['vectorised']:.1f}x; identical n-best lists for {same} of {len(questions)} questions")


if __name__ == "__main__":
    main()
