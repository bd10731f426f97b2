"""SAMSum dialogue summarisation with BERT2BERT warm-started from the default checkpoint:
encoder frozen vs trained jointly vs warm-started from a domain-adapted checkpoint, beside the
"first line of the dialogue" baseline.

The agreed split of the shared SAMSum validation file: its first 700 rows train, the last
118 evaluate. Every run uses the bundled recipe samsum_bert2bert (beam 4, no repeated trigrams,
label smoothing 0.1); only the encoder policy, the learning rates and the starting weights differ.
"adapted" first continues pretraining (masked LM, whole words) on the training rows' dialogues and
summaries (rows 0-649 train it, 650-699 pick its best epoch; the evaluation rows are never read),
publishes that as a stock BertForMaskedLM, and warm-starts both encoder and decoder from it: the
decoder then begins with an LM head that has learned to predict this domain's words, which the
default checkpoint (a sentence-embedding model) does not have.

    python benchmarks/samsum_bert2bert.py [--epochs 8] [--only joint|frozen|adapted] [--mlm-epochs 10] [--out runs/samsum]

Prints ROUGE-1/2/L/Lsum, BLEU and mean length per system, the first and last training loss,
how many distinct summaries each run generated, and three sample outputs. Then who the summaries
name: the share of summaries that name one of the dialogue's speakers, the share that name someone
who does not speak in it, and ROUGE-1/L again with every person's name replaced by one placeholder
in outputs and references alike (what each system would score if it named the right people).
`--existing` scores the run folders an earlier call left in --out without training again.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMSUM = ROOT.parent / "shared" / "data" / "samsum" / "samsum-validation.csv"
sys.path.insert(0, str(ROOT))

import bert_tasks  # noqa: E402
from bert_tasks.generation_metrics import bleu, rouge  # noqa: E402

RUNS = {  # name -> overrides
    # joint: the encoder at a tenth of the decoder's rate (at one rate, 2e-4, the encoder drifted and the
    # decoder fell back on a few generic summaries: 6 distinct outputs for 118 dialogues)
    "joint": ["task.freeze_encoder=false", "train.learning_rate=4e-4", "task.encoder_lr_scale=0.1"],
    "frozen": ["task.freeze_encoder=true", "train.learning_rate=4e-4"],
    # adapted: joint, from the masked-LM-adapted checkpoint (model.checkpoint is set in adapt_checkpoint)
    "adapted": ["task.freeze_encoder=false", "train.learning_rate=4e-4", "task.encoder_lr_scale=0.1"],
}


def adapt_checkpoint(rows: list[dict[str, str]], out: Path, epochs: float) -> Path:
    """Masked-LM continued pretraining on the training rows' text; returns the published folder.

    Each dialogue is a document (its utterances the sentences) and each summary another one."""
    published = out / "adapted-mlm-published"
    if (published / "config.json").is_file():
        return published  # made by an earlier run of this benchmark
    corpus = out / "adapted-mlm-corpus.csv"
    out.mkdir(parents=True, exist_ok=True)
    with corpus.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text"])
        for row in rows:
            writer.writerow([row["dialogue"]])
            writer.writerow([row["summary"]])
    split = 2 * 650  # two documents per row: rows 0-649 train, 650-699 choose the best epoch
    config = bert_tasks.load_config("mlm", [
        "data.dataset=null", f"data.train={corpus}[:{split}]", f"data.validation={corpus}[{split}:]", "data.text_column=text",
        "task.max_length=256", "task.masking=whole_word", f"train.epochs={epochs}", "train.batch_size=16",
        "train.learning_rate=1e-4", f"output.dir={out}", "output.name=adapted-mlm", "output.overwrite=true",
    ])
    summary = bert_tasks.train(config)
    print(f"masked LM on the training rows: {summary.eval}", flush=True)
    bert_tasks.publish(out / "adapted-mlm", published)
    return published


def first_line(dialogue: str) -> str:
    """The baseline: the dialogue's first utterance ("Name: text"), as a lead-1 summary."""
    return next((line.strip() for line in dialogue.splitlines() if line.strip()), "")


def speakers(dialogue: str) -> set[str]:
    """The lowercased names before the colon of each "Name: text" line."""
    return {line.split(":", 1)[0].strip().lower() for line in dialogue.splitlines() if ":" in line and line.split(":", 1)[0].strip()}


def person_names(rows: list[dict[str, str]]) -> set[str]:
    """Every speaker's name in the file, lowercased, except those also written in lower case as a word
    ("will", "may", "mark", "a"): the model's outputs are lower case, so only unambiguous names count."""
    names = set().union(*(speakers(row["dialogue"]) for row in rows))
    bodies = " ".join(line.split(":", 1)[-1] for row in rows for line in [*row["dialogue"].splitlines(), row["summary"]])
    as_words = set(re.findall(r"\b[a-z][a-z0-9']*\b", bodies))
    return {name for name in names if " " not in name and name not in as_words}


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def naming(predictions: list[str], dialogues: list[str], names: set[str]) -> dict[str, float]:
    """Who a system's summaries name, against who speaks in each dialogue (names: every speaker of the file)."""
    right = wrong = 0
    for prediction, dialogue in zip(predictions, dialogues):
        named = {w for w in words(prediction) if w in names}
        right += bool(named & speakers(dialogue))
        wrong += bool(named - speakers(dialogue))
    return {"names a speaker": right / len(predictions), "names a stranger": wrong / len(predictions)}


def without_names(texts: list[str], names: set[str]) -> list[str]:
    """Each text's words with every known name replaced by one placeholder, so any name matches any other."""
    return [" ".join("someone" if w in names else w for w in words(text)) for text in texts]


def scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    lengths = [len(p.split()) for p in predictions]
    return {**rouge(predictions, references), "bleu": bleu(predictions, references), "words": sum(lengths) / len(lengths)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=8)
    parser.add_argument("--only", choices=sorted(RUNS))
    parser.add_argument("--mlm-epochs", type=float, default=10, help="masked-LM epochs for the adapted checkpoint")
    parser.add_argument("--out", default=str(ROOT / "runs" / "samsum"))
    parser.add_argument("--existing", action="store_true", help="score the run folders already in --out, without training")
    args = parser.parse_args()
    if not SAMSUM.is_file():
        sys.exit(f"{SAMSUM}: not found (the shared SAMSum file); nothing to run")
    with SAMSUM.open(newline="") as handle:
        every_row = list(csv.DictReader(handle))
    training, evaluation = every_row[:700], every_row[700:]
    references = [row["summary"] for row in evaluation]
    table = {"first line": scores([first_line(row["dialogue"]) for row in evaluation], references)}
    samples = {}
    for name, overrides in RUNS.items():
        if args.only and name != args.only:
            continue
        run_dir = Path(args.out) / name
        if args.existing:
            if (run_dir / "summary.json").is_file():
                samples[name] = [row["generated_text"] for row in bert_tasks.load(run_dir).predict([r["dialogue"] for r in evaluation], batch_size=32)]
                table[f"bert2bert {name}"] = {**scores(samples[name], references), "distinct": len(set(samples[name]))}
            continue
        if name == "adapted":
            overrides = [*overrides, f"model.checkpoint={adapt_checkpoint(training, Path(args.out), args.mlm_epochs)}"]
        config = bert_tasks.load_config("samsum_bert2bert", [
            "data.dataset=null", f"data.train={SAMSUM}[:700]", f"data.validation={SAMSUM}[700:]",
            f"train.epochs={args.epochs}", f"output.dir={args.out}", f"output.name={name}", "output.overwrite=true", *overrides,
        ])
        summary = bert_tasks.train(config)
        losses = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        train_losses = [e["loss"] for e in losses if e["event"] == "train"]
        predictions = [row["generated_text"] for row in bert_tasks.load(run_dir).predict([r["dialogue"] for r in evaluation], batch_size=32)]
        table[f"bert2bert {name}"] = {**scores(predictions, references), "distinct": len(set(predictions)),
                                      "loss first/last": f"{train_losses[0]:.2f}/{train_losses[-1]:.2f}",
                                      "train s": round(summary.train_seconds)}
        samples[name] = predictions

    print(f"\nSAMSum, last 118 rows of the validation file (trained on the first 700), {args.epochs:g} epochs")
    columns = ["rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "words", "distinct", "loss first/last", "train s"]
    print(f"{'system':<18}" + "".join(f"{c:>16}" for c in columns))
    for system, row in table.items():
        cells = [row.get(c, "") for c in columns]
        print(f"{system:<18}" + "".join(f"{c:>16.2f}" if isinstance(c, float) else f"{c!s:>16}" for c in cells))
    dialogues = [row["dialogue"] for row in evaluation]
    names = person_names(every_row)
    outputs = {"reference": references, "first line": [first_line(d) for d in dialogues], **samples}
    gold = without_names(references, names)
    print(f"\nWho is named ({len(names)} speaker names in the file; ROUGE with every name replaced by one placeholder)")
    print(f"{'system':<18}{'names a speaker':>18}{'names a stranger':>18}{'rouge1 no names':>18}{'rougeL no names':>18}")
    for system, texts in outputs.items():
        named = naming(texts, dialogues, names)
        blind = rouge(without_names(texts, names), gold)
        print(f"{system:<18}{named['names a speaker']:>18.3f}{named['names a stranger']:>18.3f}{blind['rouge1']:>18.2f}{blind['rougeL']:>18.2f}")
    for index in (0, 1, 2):
        print(f"\n--- example {index + 1} (row {700 + index + 2} of the file) ---")
        print("reference :", references[index])
        print("first line:", first_line(evaluation[index]["dialogue"]))
        for name, predictions in samples.items():
            print(f"{name:<10}:", predictions[index])


if __name__ == "__main__":
    main()
