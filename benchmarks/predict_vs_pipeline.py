"""Prediction speed: ``bert_tasks.load(run).predict`` against ``transformers.pipeline`` on the same weights.

Two jobs on the shared data, with the default checkpoint briefly fine-tuned (the weights only need
to be the same on both sides; accuracy is not the point):
- classification: 10,000 SST-2 train sentences, a run trained on 512 other rows (60,000-60,511), published as a
  stock ``BertForSequenceClassification``, against ``pipeline("text-classification")``;
- extractive QA: the 1,988 evaluation questions of the agreed SQuAD v1.1 split (articles 38-47),
  max_length 384, stride 128, max answer 30 tokens, a run trained on 256 questions of articles
  0-37, against the stock ``BertForQuestionAnswering`` driven as transformers' run_qa.py example
  does (transformers 5 removed the question-answering pipeline), with the same settings.
Same batch (64), same precision (fp32 by default: both answers should then agree), one warm-up
call each, then the timed pass. Prints rows/s of both, the ratio and the agreement of labels or
answer texts, and the machine. "stock" is the pipeline for SST-2 and the run_qa.py-style loop for SQuAD.

    python benchmarks/predict_vs_pipeline.py [--rows 10000] [--batch-size 64] [--only sst2|squad]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bert_tasks  # noqa: E402
from bert_tasks.data import load_split  # noqa: E402
from cached_strategies import machine  # noqa: E402
from shared_data import SQUAD, SQUAD_EVAL as EVAL_QUESTIONS, SST2, read_tsv  # noqa: E402
from trainer_reference import exhaustive_answers, stock_qa_answers  # noqa: E402


def trained_and_published(recipe: str, overrides: list[str], out: Path) -> tuple[Path, Path]:
    """A short full fine-tuning run (fp32) and its stock transformers export."""
    summary = bert_tasks.train(bert_tasks.load_config(recipe, [*overrides, "train.epochs=1", "train.mixed_precision=no",
                                                               "train.eval_every=epoch", f"output.dir={out}", "output.overwrite=true"]))
    published = out / f"{Path(summary.run_dir).name}-published"
    export = bert_tasks.publish(Path(summary.run_dir), published)
    if export.format != "transformers":
        raise SystemExit(f"{summary.run_dir}: not exportable to a stock class ({export.reason})")
    return Path(summary.run_dir), published


def timed(function, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def compare_sst2(out: Path, rows: int, batch_size: int) -> tuple[float, float, float]:
    from transformers import pipeline

    run, published = trained_and_published("glue/sst2", [f"data.train={SST2 / 'train.tsv'}[60000:60512]", f"data.validation={SST2 / 'dev.tsv'}[:128]",
                                                          "task.max_length=128", "task.pooling=cls"], out)  # as the pipeline's model
    texts, _ = read_tsv(SST2 / "train.tsv", rows)
    ours = bert_tasks.load(run, device="cpu")
    ours.predict(texts[:batch_size], batch_size)  # warm-up: weights loaded, kernels chosen
    ours_seconds, our_answers = timed(ours.predict, texts, batch_size)
    stock = pipeline("text-classification", model=str(published), device="cpu", truncation=True, max_length=128)
    stock(texts[:batch_size], batch_size=batch_size)
    their_seconds, their_answers = timed(stock, texts, batch_size=batch_size)
    agree = sum(a["label"] == b["label"] for a, b in zip(our_answers, their_answers)) / len(texts)
    return len(texts) / ours_seconds, len(texts) / their_seconds, agree


def compare_squad(out: Path, batch_size: int) -> tuple[float, float, float, float, int]:
    """Rows/s of both, agreement with run_qa.py's decoding (20 best starts and ends per window) and with
    the same logits decoded over every allowed span, as bert_tasks decodes."""
    settings = ["data.dataset=null", f"data.train={SQUAD}[:256]", f"data.validation={SQUAD}[8582:8646]",
                "task.max_length=384", "task.doc_stride=128", "task.max_answer_length=30", "task.n_best=20"]
    run, published = trained_and_published("squad", settings, out)
    split = load_split("input", f"{SQUAD}{EVAL_QUESTIONS}")
    questions, contexts = list(split.dataset["question"]), list(split.dataset["context"])
    pairs = list(zip(questions, contexts))
    ours = bert_tasks.load(run, device="cpu")
    ours.predict(pairs[:batch_size], batch_size)
    ours_seconds, our_answers = timed(ours.predict, pairs, batch_size)
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    model, tokenizer = AutoModelForQuestionAnswering.from_pretrained(str(published)), AutoTokenizer.from_pretrained(str(published))
    stock_qa_answers(model, tokenizer, questions[:batch_size], contexts[:batch_size], batch_size)
    windows: list = []
    their_seconds, their_answers = timed(stock_qa_answers, model, tokenizer, questions, contexts, batch_size, windows)

    def agreement(answers: list[str]) -> float:
        return sum(a["answer"].strip() == b.strip() for a, b in zip(our_answers, answers)) / len(pairs)

    exhaustive = exhaustive_answers(windows, contexts)
    return len(pairs) / ours_seconds, len(pairs) / their_seconds, agreement(their_answers), agreement(exhaustive), len(pairs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--only", choices=["sst2", "squad"])
    args = parser.parse_args()
    if not (SST2 / "train.tsv").is_file() or not SQUAD.is_file():
        print("skipped: the shared SST-2 and SQuAD data are needed")
        return 0
    import torch

    results = []
    with tempfile.TemporaryDirectory() as folder:
        if args.only in (None, "sst2"):
            ours, theirs, agree = compare_sst2(Path(folder), args.rows, args.batch_size)
            results.append((f"SST-2, {args.rows:,} sentences", ours, theirs, f"labels {100 * agree:.2f}%"))
        if args.only in (None, "squad"):
            ours, theirs, agree, agree_exhaustive, count = compare_squad(Path(folder), args.batch_size)
            results.append((f"SQuAD v1.1, {count:,} questions", ours, theirs,
                            f"answers {100 * agree:.2f}% (with the same logits searched over every span: {100 * agree_exhaustive:.2f}%)"))
    print(f"Machine: {machine()}; {torch.get_num_threads()} threads; fp32; batch {args.batch_size}")
    print(f"{'job':<30}{'stock rows/s':>16}{'bert_tasks rows/s':>19}{'ratio':>8}  agreement")
    for job, ours, theirs, agreement in results:
        print(f"{job:<30}{theirs:>16.1f}{ours:>19.1f}{ours / theirs:>8.2f}  {agreement}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
