"""Reading and writing the user's text files: UTF-8 in (a byte-order mark is dropped), one clear
error for anything else (compressed, binary, another encoding). Writing: atomic_files.py."""
from __future__ import annotations

from pathlib import Path

from .errors import DataError

# First bytes of files people give by mistake, and what to tell them.
MAGIC = {
    b"\x1f\x8b": "gzip-compressed; decompress it first (gunzip)",
    b"PK\x03\x04": "a zip archive; extract the data file first",
    b"BZh": "bzip2-compressed; decompress it first (bunzip2)",
    b"\xfd7zXZ\x00": "xz-compressed; decompress it first (unxz)",
    b"PAR1": "a parquet file; give it a .parquet name",
    b"\xff\xfe": "UTF-16 text; re-save it as UTF-8",
    b"\xfe\xff": "UTF-16 text; re-save it as UTF-8",
}


def check_is_file(path: Path, key: str = "") -> None:
    """A clear error for a path that is missing or is a folder (``key``: the option that named it)."""
    label = f"{key}={str(path)!r}" if key else str(path)
    if Path(path).is_dir():
        raise DataError(f"{label}: is a folder, expected a file{_inside(Path(path))}")
    if not Path(path).is_file():
        raise DataError(f"{label}: no such file")


def _inside(folder: Path) -> str:
    """' (it holds a.parquet, b.parquet)': a hint at the file the user meant."""
    try:
        names = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError:
        return ""
    if not names:
        return ""
    return f" (it holds {', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"


def check_text_start(path: Path, size: int = 1 << 16) -> None:
    """The checks read_text makes, on the first ``size`` bytes only (for files read in chunks)."""
    with Path(path).open("rb") as handle:
        _check_not_binary(path, handle.read(size))


def _check_not_binary(path: Path, raw: bytes) -> None:
    for magic, what in MAGIC.items():
        if raw.startswith(magic):
            raise DataError(f"{path}: expected UTF-8 text, but the file is {what}")
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: a NUL byte; the file looks binary, expected UTF-8 text")


def read_text(path: Path) -> str:
    """The file's text; a UTF-8 byte-order mark (as Excel writes) is removed, not made part of a column name."""
    raw = Path(path).read_bytes()
    _check_not_binary(path, raw)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataError(
            f"{path}, line {line}: not UTF-8 text (byte 0x{raw[error.start]:02x}); re-save the file as UTF-8"
        ) from None
    return text
