"""Reading examples: Hub data sets, the embedded demo set, and local csv/tsv/json/jsonl/parquet/CoNLL.

Every split comes back as a ``Split``: a ``datasets.Dataset`` plus where each row
came from, so that any later check can say "file, line N" in its error.
"""
from __future__ import annotations

import csv
import io
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import datasets

from .conll import CONLL_SUFFIXES, read_conll
from .errors import DataError
from .squad_format import flatten_squad, is_squad, squad_article_numbers
from .tasks.pretraining_corpus import read_documents_with_lines
from .text_files import check_is_file, check_text_start, read_text

DEMO_DATASET = "demo"
DEMO_DIR = Path(__file__).resolve().parent / "demo_data"
LOCAL_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet", *CONLL_SUFFIXES)
PLAIN_TEXT_SUFFIX, PLAIN_TEXT_COLUMN = ".txt", "text"  # raw text: a row per document, its sentences as lines
# file.json[8582:] -> rows 8582 to the end; squad.json[articles=38:] -> the questions of articles 38 to the end
ROW_RANGE = re.compile(r"^(?P<path>.+)\[(?:(?P<unit>articles)=)?(?P<start>\d*):(?P<stop>\d*)\]$")


@dataclass
class Split:
    """One split's rows and a way to name a row's place in its source."""

    name: str  # 'train', 'validation', 'test'
    dataset: datasets.Dataset
    origin: str  # file path, or 'hub glue/sst2 [train]'
    lines: Optional[list[int]] = None  # the file line of each row, when the format has lines
    format: str = "hub"  # csv, tsv, json, jsonl, parquet, conll or hub: predictions are written back in it
    line_per_item: bool = False  # CoNLL: item k of a row (a token) is on the row's line + k
    row_label: str = "line"  # what self.lines count: file lines, or rows (formats without a line per row)

    def where(self, index: int, item: Optional[int] = None) -> str:
        """'file, line N' of a row, or of item ``item`` (e.g. a token) within the row."""
        if self.lines is not None:
            if item is not None and self.line_per_item:
                return f"{self.origin}, line {self.lines[index] + item}"
            place = f"{self.origin}, {self.row_label} {self.lines[index]}"
        else:
            place = f"{self.origin}, row {index + 1}"
        return place if item is None else f"{place}, item {item + 1}"

    def __len__(self) -> int:
        return len(self.dataset)

    def require_columns(self, columns: Sequence[Optional[str]], keys: Sequence[str]) -> None:
        """Fail with the first configured column that the split does not have."""
        present = self.dataset.column_names
        for column, key in zip(columns, keys):
            if column is not None and column not in present:
                raise DataError(
                    f"{self.origin}: missing column {column!r} (set by {key}); the columns are {', '.join(present)}"
                )

    def texts(self, column: str, allow_empty: bool = True) -> list[str]:
        """The column's values, each checked to be text (and not blank unless ``allow_empty``)."""
        values = list(self.dataset[column])
        for index, value in enumerate(values):
            if not isinstance(value, str) or (not allow_empty and not value.strip()):
                raise DataError(f"{self.where(index)}: field {column!r} must be {'text' if allow_empty else 'non-empty text'}, got {value!r}")
        return values

    def adopt_column(self, column: str, generic_names: Sequence[str]) -> "Split":
        """Prediction files may use a generic name ('text', ...) for ``column``: rename the first one present."""
        present = self.dataset.column_names
        if column not in present:
            generic = next((name for name in generic_names if name in present), None)
            if generic is not None:
                self.dataset = self.dataset.rename_columns({generic: column})
        return self

    def head(self, count: Optional[int]) -> "Split":
        if count is None or count >= len(self.dataset):
            return self
        return self.rows(0, count)

    def rows(self, start: int, stop: int) -> "Split":
        """Rows [start, stop) (errors still name their place in the whole file)."""
        if self.lines is None:  # number the rows as in the whole file
            lines, label = [i + 1 for i in range(start, stop)], "row"
        else:
            lines, label = self.lines[start:stop], self.row_label
        return Split(self.name, self.dataset.select(range(start, stop)), self.origin, lines, self.format, self.line_per_item, label)


def is_local_file(value: str) -> bool:
    match = ROW_RANGE.match(value)
    value = match.group("path") if match else value
    return Path(value).suffix.lower() in LOCAL_SUFFIXES or Path(value).is_file() or Path(value).is_dir()


def _read_local(name: str, source: str, tsv_quoting: bool, conll_columns: Optional[Sequence[str]], plain_text: bool = False) -> Split:
    """A local file, or a row range of one: ``dev.json[:8582]``, ``dev.json[8582:]``."""
    match = ROW_RANGE.match(source)
    path = Path(match.group("path") if match else source)
    if path.is_dir() and any(path.glob("*.parquet")):
        split = read_parquet_folder(name, path)
    else:
        split = read_file(name, path, tsv_quoting=tsv_quoting, conll_columns=conll_columns, plain_text=plain_text)
    if not match:
        return split
    if match.group("unit") == "articles":
        return _article_range(name, source, split, path, match)
    start = int(match.group("start") or 0)
    stop = min(len(split), int(match.group("stop") or len(split)))
    if start >= stop:
        raise DataError(f"data.{name}={source!r}: the range selects no rows (the file has {len(split)})")
    return split.rows(start, stop)


def _article_range(name: str, source: str, split: Split, path: Path, match: re.Match) -> Split:
    """The questions of SQuAD articles [start, stop): a split by article keeps each article's questions together."""
    if split.format != "squad":
        raise DataError(f"data.{name}={source!r}: [articles=...] selects SQuAD articles, but {path} is not a SQuAD JSON file; use [start:stop] for rows")
    articles = squad_article_numbers(json.loads(read_text(path)))
    count = articles[-1] + 1 if articles else 0
    start, stop = int(match.group("start") or 0), min(count, int(match.group("stop") or count))
    rows = [row for row, article in enumerate(articles) if start <= article < stop]
    if not rows:
        raise DataError(f"data.{name}={source!r}: the range selects no questions (the file has {count} articles)")
    return split.rows(rows[0], rows[-1] + 1)  # an article's questions are consecutive rows


def load_split(
    name: str,
    source: str,
    dataset: Optional[str] = None,
    dataset_config: Optional[str] = None,
    tsv_quoting: bool = False,
    conll_columns: Optional[Sequence[str]] = None,
    plain_text: bool = False,
) -> Split:
    """Read one split: a local file if ``source`` looks like one, else a split of ``dataset``.
    ``plain_text``: a .txt file is raw text in BERT's pretraining layout (else CoNLL columns)."""
    if Path(source).is_dir() and not any(Path(source).glob("*.parquet")):
        check_is_file(Path(source), f"data.{name}")
    if dataset == DEMO_DATASET and not is_local_file(source):
        return read_file(name, DEMO_DIR / f"{source}.csv")
    if is_local_file(source):
        return _read_local(name, source, tsv_quoting, conll_columns, plain_text)
    if dataset is None:
        raise DataError(f"data.{name}={source!r}: no such file, and no data.dataset is set to take a Hub split from")
    return _read_hub(name, dataset, dataset_config, source)


def read_parquet_folder(name: str, folder: Path) -> Split:
    """A folder of parquet shards (the Hub's layout, e.g. ``glue/cola/train/0000.parquet``) as one split, shards in name order."""
    shards = sorted(folder.glob("*.parquet"))
    try:
        data = datasets.concatenate_datasets([datasets.Dataset.from_parquet(str(shard)) for shard in shards])
    except Exception as error:
        raise DataError(f"data.{name}={str(folder)!r}: its parquet files do not form one table ({type(error).__name__}: {str(error).splitlines()[0][:120]})") from None
    if len(data) == 0:
        raise DataError(f"{folder}: the parquet files have no rows")
    return Split(name, data, str(folder), format="parquet")


def _read_hub(name: str, dataset: str, config: Optional[str], split: str) -> Split:
    label = f"hub {dataset}{'/' + config if config else ''} [{split}]"
    try:
        data = datasets.load_dataset(dataset, config, split=split)
    except Exception as error:  # datasets raises many types (ConnectionError, DatasetNotFoundError, ValueError)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(
            f"data.{name}: cannot load {label}: {first[:200]} (offline? give local files with data.{name}=PATH)"
        ) from None
    if len(data) == 0:
        raise DataError(f"{label}: the split is empty")
    return Split(name, data, label)


def read_file(name: str, path: Path, tsv_quoting: bool = False, conll_columns: Optional[Sequence[str]] = None, plain_text: bool = False) -> Split:
    """Read a local csv / tsv / json / jsonl / parquet / CoNLL file into a Split; with ``plain_text``
    a .txt file is raw text (one sentence per line, blank lines between documents): a row per document."""
    check_is_file(path, f"data.{name}")
    suffix = path.suffix.lower()
    if suffix == PLAIN_TEXT_SUFFIX and plain_text:
        documents, lines = read_documents_with_lines(path)
        return Split(name, datasets.Dataset.from_dict({PLAIN_TEXT_COLUMN: ["\n".join(d) for d in documents]}), str(path), lines, "txt")
    if suffix in CONLL_SUFFIXES:
        columns, lines = read_conll(path, conll_columns)
        return Split(name, datasets.Dataset.from_dict(columns), str(path), lines, "conll", line_per_item=True)
    if suffix == ".parquet":
        try:
            data = datasets.Dataset.from_parquet(str(path))
        except Exception as error:
            raise DataError(f"{path}: not a readable parquet file ({type(error).__name__})") from None
        if len(data) == 0:
            raise DataError(f"{path}: the file has no rows")
        return Split(name, data, str(path), format="parquet")
    if suffix not in LOCAL_SUFFIXES:
        raise DataError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(LOCAL_SUFFIXES)}")
    if suffix in (".csv", ".tsv"):
        rows, lines = _read_delimited(path, delimiter="\t" if suffix == ".tsv" else ",", quoting=tsv_quoting or suffix == ".csv")
    elif suffix == ".jsonl":
        rows, lines = _read_jsonl(path)
    else:
        rows, lines = _read_json(path)
        if is_squad(rows):
            rows, suffix = flatten_squad({"data": rows}, path), ".squad"
    if not rows:
        raise DataError(f"{path}: the file has no rows")
    return _rows_split(name, path, rows, lines, suffix.lstrip("."), list(rows[0]))


def _rows_split(name: str, path: Path, rows: list[dict[str, Any]], lines: Optional[list[int]], file_format: str, columns: list[str]) -> Split:
    """Rows of one file (or one chunk of it) as a Split, after checking every row has ``columns`` and each
    column one kind of value."""
    split = Split(name, datasets.Dataset.from_dict({}), str(path), lines, file_format)
    for index, row in enumerate(rows):
        if set(row) != set(columns):
            odd = sorted(set(columns) ^ set(row))
            raise DataError(f"{split.where(index)}: fields {odd} differ from the first row's fields {columns}")
    _check_field_kinds(split, rows, columns)
    try:
        split.dataset = datasets.Dataset.from_dict({c: [row[c] for row in rows] for c in columns})
    except Exception as error:  # pyarrow: values inside lists or objects of mixed kinds
        raise DataError(f"{path}: fields hold values of mixed types that cannot form one column ({str(error).splitlines()[0][:120]})") from None
    return split


def _kind(value: Any) -> Optional[str]:
    """What a JSON value is, in words; None for null (allowed anywhere)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    return "an object"


class _FirstKind:
    """The kind of value first seen (and where), which every later value must match."""

    def __init__(self) -> None:
        self.seen: Optional[tuple[int, str]] = None

    def mismatch(self, index: int, value: Any) -> Optional[tuple[str, int, str]]:
        """(this kind, index of the first, first kind) when ``value`` differs from the first; else None."""
        kind = _kind(value)
        if kind is None:
            return None
        if self.seen is None:
            self.seen = (index, kind)
            return None
        return (kind, *self.seen) if kind != self.seen[1] else None


def _check_field_kinds(split: Split, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Every row's field must be the same kind of value as the first row that has it (text, number, list, ...),
    and so must the items of list fields (a token list holding a number among texts)."""
    for column in columns:
        fields, items = _FirstKind(), _FirstKind()
        for index, row in enumerate(rows):
            value = row[column]
            found = fields.mismatch(index, value)
            if found:
                kind, first, first_kind = found
                raise DataError(
                    f"{split.where(index)}: field {column!r} is {kind} ({str(value)[:40]!r}), "
                    f"but at {_place(split, first)} it is {first_kind}; a column holds one kind of value"
                )
            for position, item in enumerate(value if isinstance(value, list) else ()):
                found = items.mismatch(index, item)
                if found:
                    kind, first, first_kind = found
                    raise DataError(
                        f"{split.where(index)}: item {position + 1} of field {column!r} is {kind} ({str(item)[:40]!r}), "
                        f"but the items at {_place(split, first)} are {first_kind}; a list holds one kind of value"
                    )


def _place(split: Split, index: int) -> str:
    """'line N' / 'row N' of a row, without the file name (it was named already)."""
    return split.where(index).removeprefix(f"{split.origin}, ")


def _read_delimited(path: Path, delimiter: str, quoting: bool) -> tuple[list[dict[str, Any]], list[int]]:
    with io.StringIO(read_text(path), newline="") as handle:
        pairs = list(_delimited_rows(handle, path, delimiter, quoting))
    return [row for row, _ in pairs], [line for _, line in pairs]


def _delimited_rows(handle: Any, path: Path, delimiter: str, quoting: bool) -> Iterator[tuple[dict[str, Any], int]]:
    """(row, line) of every non-empty row after the header, read as the file is read."""
    csv.field_size_limit(sys.maxsize)
    reader = csv.reader(handle, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if quoting else csv.QUOTE_NONE)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: the file is empty (expected a header row)") from None
    if len(set(header)) != len(header):
        raise DataError(f"{path}, line 1: repeated column names in the header {header}")
    start = reader.line_num + 1
    for values in reader:
        line, start = start, reader.line_num + 1
        if not values:
            continue
        if len(values) != len(header):
            raise DataError(f"{path}, line {line}: {len(values)} fields, expected {len(header)} ({', '.join(header)})")
        yield dict(zip(header, values)), line


def _read_jsonl(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    with io.StringIO(read_text(path)) as handle:
        pairs = list(_jsonl_rows(handle, path))
    return [row for row, _ in pairs], [line for _, line in pairs]


def _jsonl_rows(handle: Any, path: Path) -> Iterator[tuple[dict[str, Any], int]]:
    for number, text in enumerate(handle, start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}, line {number}: not valid JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}")
        yield row, number


STREAMED_SUFFIXES = (".csv", ".tsv", ".jsonl")  # formats read a chunk of rows at a time (prediction of files of any size)


def read_file_in_chunks(name: str, path: Path, chunk_rows: int, tsv_quoting: bool = False) -> Iterator[Split]:
    """A csv / tsv / jsonl file as Splits of at most ``chunk_rows`` rows, in file order, read as they are
    needed: memory stays flat however long the file is. Each chunk gets read_file's checks."""
    check_is_file(path, f"data.{name}")
    suffix = path.suffix.lower()
    if suffix not in STREAMED_SUFFIXES:
        raise DataError(f"{path}: {suffix!r} files are read whole; chunked reading takes {', '.join(STREAMED_SUFFIXES)}")
    check_text_start(path)
    delimiter, quoted = "\t" if suffix == ".tsv" else ",", tsv_quoting or suffix == ".csv"
    columns: Optional[list[str]] = None  # the first row's: every row of every chunk must have them
    with path.open(encoding="utf-8-sig", newline="" if suffix != ".jsonl" else None) as handle:
        pairs = _jsonl_rows(handle, path) if suffix == ".jsonl" else _delimited_rows(handle, path, delimiter, quoted)
        chunk: list[tuple[dict[str, Any], int]] = []
        for pair in _decoded(pairs, path):
            columns = columns or list(pair[0])
            chunk.append(pair)
            if len(chunk) == chunk_rows:
                yield _chunk_split(name, path, chunk, columns, suffix)
                chunk = []
    if columns is None:
        raise DataError(f"{path}: the file has no rows")
    if chunk:
        yield _chunk_split(name, path, chunk, columns, suffix)


def _decoded(pairs: Iterator[tuple[dict[str, Any], int]], path: Path) -> Iterator[tuple[dict[str, Any], int]]:
    """The rows, with a file that stops being UTF-8 text part-way through named (as read_text names it)."""
    line = 0
    try:
        for row, line in pairs:
            yield row, line
    except UnicodeDecodeError:
        raise DataError(f"{path}, after line {line}: not UTF-8 text; re-save the file as UTF-8") from None
    except csv.Error as error:
        raise DataError(f"{path}, after line {line}: {error}; expected UTF-8 text") from None


def _chunk_split(name: str, path: Path, chunk: list[tuple[dict[str, Any], int]], columns: list[str], suffix: str) -> Split:
    return _rows_split(name, path, [row for row, _ in chunk], [line for _, line in chunk], suffix.lstrip("."), columns)


def _read_json(path: Path) -> tuple[list[dict[str, Any]], None]:
    """A JSON list of objects, or an object holding one under 'data'."""
    text = read_text(path)
    if not text.strip():
        raise DataError(f"{path}: the file is empty (expected a JSON list of objects)")
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}, line {error.lineno}: not valid JSON ({error.msg})") from None
    if isinstance(payload, dict) and isinstance(payload.get("data"), list):
        payload = payload["data"]
    if not isinstance(payload, list) or not all(isinstance(row, dict) for row in payload):
        raise DataError(f"{path}: expected a list of objects (or {{'data': [...]}})")
    return list(payload), None  # a JSON document has no line per row: errors say "row N"
