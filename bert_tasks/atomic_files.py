"""Writes that a kill cannot tear: write beside the target under a temporary name, flush it to
disk, then rename over the target (``os.replace`` is atomic on one file system). A reader sees
the old file or the new one, never half of either."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

TEMPORARY_MARK = ".tmp-"  # ``name.tmp-<pid>``: a file or folder still being written


def temporary_name(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place (same folder: same file system)."""
    return path.with_name(f".{path.name}{TEMPORARY_MARK}{os.getpid()}")


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk, so a rename after it is durable."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success it replaces ``path`` in one step,
    on any failure it is removed, so ``path`` is either the old file or the complete new one.

    The temporary name is new (``mkstemp``: never a file that already exists) and carries
    ``TEMPORARY_MARK``, so a killed run's leftovers are recognised; it gets the permissions an
    ordinary ``open()`` would have given."""
    path = Path(path)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}{TEMPORARY_MARK}{os.getpid()}.", dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_path(path.parent)


def write_text(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, value: Any) -> None:
    write_text(path, json.dumps(value, indent=2) + "\n")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
