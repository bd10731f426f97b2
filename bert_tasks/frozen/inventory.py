"""Where frozen stores live and what is there (`bert-tasks cache`): no torch needed.

Stores are shared by every run that uses the same folder (that is how a comparison's cells and a
hand-made learning-rate sweep reuse one), so they outlive runs, like the Hugging Face caches.
``bert-tasks cache`` lists them; ``--clear`` removes them, and only them: a folder counts as a
store only with our manifest inside, and the ``.KEY.building`` / ``KEY.lock`` entries of builds
only when no live process holds their lock.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional

MANIFEST = "manifest.json"
FORMAT = 1


def cache_root(cache_dir: Optional[str] = None) -> Path:
    """train.cache_dir, else $BERT_TASKS_CACHE, else $XDG_CACHE_HOME/bert_tasks/frozen (~/.cache/...)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("BERT_TASKS_CACHE"):
        return Path(os.environ["BERT_TASKS_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "bert_tasks" / "frozen"


def read_manifest(folder: Path) -> Optional[dict[str, Any]]:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def stores(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(folder, manifest) of every complete store under ``root``, newest first."""
    if not root.is_dir():
        return []
    found = [(folder, read_manifest(folder)) for folder in root.iterdir() if folder.is_dir() and not folder.name.startswith(".")]
    return sorted(((f, m) for f, m in found if m is not None and m.get("key") == f.name), key=lambda item: item[1].get("created", ""), reverse=True)


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.iterdir() if path.is_file())


def describe(root: Path) -> str:
    """One line per store: key, rows, states x hidden, dtype, size, encoder, cut, created."""
    lines = []
    total = 0
    for folder, manifest in stores(root):
        size = folder_bytes(folder)
        total += size
        cut = f"cut at layer {manifest.get('cut', '?')}" + (", every state" if manifest.get("all_states") else "")
        lines.append(f"{folder.name[:12]}  {manifest['rows']:>8,} rows  {manifest['states']} x {manifest['hidden']} {manifest['dtype']:<9} "
                     f"{size / 2**20:>9,.1f} MB  {manifest.get('encoder', '?')} {cut}  {manifest.get('created', '?')}")
    lines.append(f"{len(lines)} stores, {total / 2**20:,.1f} MB in {root}")
    return "\n".join(lines)


def clear(root: Path) -> int:
    """Remove every store under ``root`` (and dead builds' leftovers); returns the bytes freed."""
    from ..run_lock import RunLock
    from ..errors import BertTasksError

    freed = 0
    for folder, _ in stores(root):
        freed += folder_bytes(folder)
        shutil.rmtree(folder)
    for building in root.glob(".*.building") if root.is_dir() else ():
        key = building.name[1 : -len(".building")]
        try:
            lock = RunLock(root, f"{key}.lock").acquire()  # taken over only from a build that is gone
        except BertTasksError:
            continue  # a live build: not ours to touch
        shutil.rmtree(building, ignore_errors=True)
        lock.release()
    return freed
