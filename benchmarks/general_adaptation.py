"""Does masked-LM training on general English give back what the embedded checkpoint lost for CoLA?

all-MiniLM-L6-v2 was trained to put paraphrases close together, and a probe on it finds almost no
acceptability signal (README "Scores on real data"). This benchmark continues its pretraining with
masked LM (whole-word masking, BERT's 80/10/10) on well-formed text that has nothing to do with
CoLA, then fine-tunes the CoLA recipe from the result and prints the score next to the recipe's:

1. corpus: the Wikipedia paragraphs of the SQuAD v1.1 dev file (one document per paragraph, split
   into sentences at sentence-final punctuation) and the Reuters news of the CoNLL-2003 training
   file (one document per article, one line per sentence); every 20th document is held out to
   pick the best epoch;
2. `bert-tasks train mlm` on it (full fine-tuning; the checkpoint has no MLM head, so the head
   starts from the tied word embeddings and a fresh transform);
3. `bert-tasks train glue/cola model.checkpoint=<that run>` against the shared CoLA split, as
   `reference_scores.py --jobs cola` runs it.

    python benchmarks/general_adaptation.py [--mlm-epochs 3] [--set key=value ...] [--out DIR]

Measured 2026-12-07 (AMD EPYC, 2 cores, fp32): 2,862 documents, 435k words (every 20th held out);
masked LM 26 min, held-out perplexity 327, 196, 172 by epoch (masked-token accuracy 0.24): the
checkpoint does not become a good masked LM again in that time. CoLA from it: MCC 0.306 (by epoch
0.056, 0.203, 0.254, 0.296, 0.304, 0.306) against the recipe's 0.326 from the checkpoint as is, so no
gain (README "Scores on real data" has the seed spread).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_scores import JOBS, run, show  # noqa: E402
from shared_data import CONLL, DATA, ROOT, SQUAD  # noqa: E402

sys.path.insert(0, str(ROOT))
import bert_tasks  # noqa: E402
from cached_strategies import machine  # noqa: E402

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def squad_documents() -> list[list[str]]:
    """Each distinct paragraph of the SQuAD file as a document of sentences."""
    articles = json.loads(SQUAD.read_text())["data"]
    return [[s for s in SENTENCE_END.split(p["context"].strip()) if s] for a in articles for p in a["paragraphs"]]


def conll_documents() -> list[list[str]]:
    """Each article of the CoNLL-2003 training file as a document, a sentence per line (tokens joined by spaces)."""
    documents: list[list[str]] = []
    sentence: list[str] = []
    for line in (CONLL / "train.txt").read_text().splitlines() + [""]:
        if line.startswith("-DOCSTART-"):
            documents.append([])
        elif line.strip():
            sentence.append(line.split()[0])
        elif sentence:
            if not documents:
                documents.append([])
            documents[-1].append(" ".join(sentence))
            sentence = []
    return [d for d in documents if d]


def write_corpus(documents: list[list[str]], path: Path) -> None:
    """BERT's text layout: a sentence per line, a blank line between documents."""
    path.write_text("\n\n".join("\n".join(d) for d in documents) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mlm-epochs", type=float, default=3)
    parser.add_argument("--mlm-learning-rate", default="1.0e-4")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides for the CoLA run")
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"needs the shared data at {DATA}")
    print(f"machine: {machine()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="general-adaptation-") as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        documents = squad_documents() + conll_documents()
        train_docs = [d for i, d in enumerate(documents) if i % 20]
        heldout_docs = [d for i, d in enumerate(documents) if not i % 20]
        write_corpus(train_docs, out / "corpus-train.txt")
        write_corpus(heldout_docs, out / "corpus-heldout.txt")
        words = sum(len(s.split()) for d in train_docs for s in d)
        print(f"corpus: {len(train_docs)} documents, {words:,} words to train on; {len(heldout_docs)} held out", flush=True)
        mlm_dir = out / "general-mlm"
        if not (mlm_dir / "summary.json").is_file():
            config = bert_tasks.load_config("mlm", [
                "data.dataset=null", f"data.train={out / 'corpus-train.txt'}", f"data.validation={out / 'corpus-heldout.txt'}",
                "task.masking=whole_word", f"train.epochs={args.mlm_epochs}", f"train.learning_rate={args.mlm_learning_rate}",
                f"output.dir={out}", "output.name=general-mlm",
            ])
            summary = bert_tasks.train(config)
            print(f"masked LM, held-out text, best evaluation: {summary.eval}  ({summary.train_seconds / 60:.1f} min of training)", flush=True)
        job = JOBS["cola"]
        result = run(job, [f"model.checkpoint={mlm_dir}", *args.set], out, "cola-from-general-mlm", [])
        show("cola", job, result)


if __name__ == "__main__":
    main()
