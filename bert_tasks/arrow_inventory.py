"""The training-data stores on disk (arrow_store.py writes them): where they live, which are complete,
removing them. Kept apart from arrow_store so `bert-tasks cache` answers without importing torch."""
from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any, Optional

from .frozen.inventory import cache_root


def store_root(cache_dir: Optional[str]) -> Path:
    """data.cache_dir, else the shared bert_tasks cache's ``encoded`` folder."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    return cache_root().parent / "encoded" if not os.environ.get("BERT_TASKS_CACHE") else cache_root() / "encoded"


PARTIAL = ".partial-"  # a store being written: .partial-HOST-PID-RANDOM-NAME


def remove_dead_builds(root: Path) -> None:
    """Remove the partial folders of builds on this machine whose process is gone (killed mid-build)."""
    host = socket.gethostname()
    for partial in root.glob(f"{PARTIAL}{host}-*"):
        pid = partial.name[len(PARTIAL) + len(host) + 1 :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stores(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(folder, store.json) of every complete store under ``root``."""
    if not root.is_dir():
        return []
    found = [(f, f / "store.json") for f in root.iterdir() if f.is_dir() and f.name.split("-")[0] in ("raw", "encoded")]
    return [(folder, json.loads(info.read_text())) for folder, info in found if info.is_file()]


def describe(root: Path) -> str:
    sizes = [sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) for folder, _ in stores(root)]
    return f"{len(sizes)} training-data stores (data.storage=arrow), {sum(sizes) / 2**20:,.1f} MB in {root}"


def clear(root: Path) -> int:
    """Remove every complete store and dead build under ``root``; returns the bytes freed. Stores being
    written by live processes are left alone."""
    freed = 0
    for folder, _ in stores(root):
        freed += sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        shutil.rmtree(folder)
    if root.is_dir():
        remove_dead_builds(root)
    return freed
