"""CoNLL column files: one token per line, whitespace-separated columns, a blank line
between sentences, ``-DOCSTART-`` lines between documents.

Reading gives one row per sentence with one list column per file column (CoNLL-2003
names by default: ``tokens pos_tags chunk_tags ner_tags``, the Hub data set's names);
writing copies an input file line for line and appends a predicted column, so
predictions come back in the input's own format.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional, Sequence

from .errors import DataError
from .atomic_files import replacing
from .text_files import read_text

CONLL_SUFFIXES = (".conll", ".conllx", ".txt", ".iob", ".iob2", ".bio", ".bioes", ".iobes")
DOCSTART = "-DOCSTART-"
# Column names by number of columns; other widths get tokens, column_1, column_2, ...
DEFAULT_COLUMNS = {
    2: ("tokens", "tags"),
    4: ("tokens", "pos_tags", "chunk_tags", "ner_tags"),  # CoNLL-2003
}


def default_columns(width: int) -> tuple[str, ...]:
    return DEFAULT_COLUMNS.get(width, ("tokens", *[f"column_{i}" for i in range(1, width)]))


def _lines(path: Path) -> Iterator[tuple[int, str, Optional[list[str]]]]:
    """(line number, raw line, fields) for every line; fields None for blank and -DOCSTART- lines."""
    text = read_text(path)
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()  # the final newline ends the last line; it does not start another
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        fields = line.split()
        yield number, line, (fields if fields and fields[0] != DOCSTART else None)


def read_conll(path: Path, columns: Optional[Sequence[str]] = None) -> tuple[dict[str, list[list[str]]], list[int]]:
    """Sentences as ``{column: [[value per token] per sentence]}`` and each sentence's first line."""
    names: Optional[tuple[str, ...]] = tuple(columns) if columns else None
    width: Optional[int] = None
    first_line = 0
    data: dict[str, list[list[str]]] = {}
    lines: list[int] = []
    sentence: list[list[str]] = []

    def close() -> None:
        if sentence:
            for i, name in enumerate(names):
                data[name].append([fields[i] for fields in sentence])
            sentence.clear()

    for number, _, fields in _lines(path):
        if fields is None:
            close()
            continue
        if width is None:
            width, first_line = len(fields), number
            if names is None:
                names = default_columns(width)
            if len(names) != width:
                raise DataError(f"{path}, line {number}: {width} columns, but data.conll_columns names {len(names)} ({', '.join(names)})")
            if len(set(names)) != len(names):
                raise DataError(f"data.conll_columns: repeated column names {list(names)}")
            data = {name: [] for name in names}
        elif len(fields) != width:
            raise DataError(f"{path}, line {number}: {len(fields)} columns, expected {width} like line {first_line} ({' '.join(names)})")
        if not sentence:
            lines.append(number)
        sentence.append(fields)
    close()
    if width is None:
        raise DataError(f"{path}: no tokens (a CoNLL file has one token per line, blank lines between sentences)")
    return data, lines


def write_conll(source: Path, predicted: Sequence[Sequence[str]], out: Path) -> None:
    """Copy ``source`` with one more column: the predicted tag of each token line (written atomically)."""
    sentence, position = 0, 0
    with replacing(out) as temporary, temporary.open("w", encoding="utf-8") as handle:
        for _, line, fields in _lines(source):
            if fields is None:
                if position:
                    sentence, position = sentence + 1, 0
                handle.write(line + "\n")
                continue
            separator = "\t" if "\t" in line else " "
            handle.write(f"{line}{separator}{predicted[sentence][position]}\n")
            position += 1
