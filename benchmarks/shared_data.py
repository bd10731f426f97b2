"""Where the benchmarks find the shared data (../shared/data beside the checkout) and small readers for it."""
from __future__ import annotations

import csv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
SST2 = DATA / "sst2_tsv"
CONLL = DATA / "conll2003"
SQUAD = DATA / "squad_v1.1" / "dev-v1.1.json"
SQUAD_SPLIT_AT = 8582  # the agreed split of the dev file: questions before it (articles 0-37) train, the rest evaluate
SQUAD_TRAIN, SQUAD_EVAL = f"[:{SQUAD_SPLIT_AT}]", f"[{SQUAD_SPLIT_AT}:]"


def read_tsv(path: Path, rows: int | None = None) -> tuple[list[str], list[int]]:
    """Sentences and labels of a GLUE single-sentence TSV (tabs split fields; quotes are text)."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        data = [(r["sentence"], int(r["label"])) for r in reader]
    data = data[:rows] if rows else data
    return [t for t, _ in data], [label for _, label in data]


def squad_rows(selection: str) -> tuple[list[str], list[str], list[list[str]], list[list[int]]]:
    """Questions, contexts, gold answer texts and their character starts of ``SQUAD`` + ``selection`` (e.g. '[:2000]')."""
    import sys

    sys.path.insert(0, str(ROOT))
    from bert_tasks.data import load_split

    split = load_split("input", f"{SQUAD}{selection}")
    answers = split.dataset["answers"]
    return (list(split.dataset["question"]), list(split.dataset["context"]),
            [list(a["text"]) for a in answers], [list(a["answer_start"]) for a in answers])
