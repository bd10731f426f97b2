"""One writer per run folder: a lock file naming the training that holds it.

``RUN_DIR/train.lock`` is created with O_EXCL (creation fails if it exists, atomically, even
between machines sharing the folder) and holds ``{"pid", "host", "started"}``. A lock left by a
killed training (its pid no longer exists on this host) is taken over with a notice; a live one
(or one from another host, which cannot be checked) stops the second training with one line
naming the holder.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Optional

from .errors import BertTasksError

LOCK_FILE = "train.lock"


def _process_exists(pid: int) -> bool:
    """Whether ``pid`` runs on this host (a killed process its parent has not reaped yet does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # no /proc (macOS): the signal check is all there is
        return True
    return "\nState:\tZ" not in status


def _describe(holder: dict[str, Any]) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {when}"


class RunLock:
    """Held from ``acquire`` to ``release`` (or the end of a ``with`` block)."""

    def __init__(self, run_dir: Path, name: str = LOCK_FILE) -> None:
        self.path = Path(run_dir) / name
        self.mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        self.held = False

    def acquire(self) -> "RunLock":
        for _ in range(3):  # a stale lock taken over, or a lock released while we looked: try again
            if self._create():
                self.held = True
                return self
            holder = self._read()
            if holder is None:
                continue  # vanished, or half-written by a process that is writing it right now
            if holder.get("host") == self.mine["host"] and isinstance(holder.get("pid"), int) and not _process_exists(holder["pid"]):
                print(f"bert-tasks: {self.path}: taking over the lock of a training that is gone ({_describe(holder)})", file=sys.stderr)
                self._remove_if(holder)
                continue
            raise BertTasksError(
                f"{self.path.parent}: another training is using this run folder ({_describe(holder)}); "
                f"wait for it, or delete {self.path} if that training is no longer running"
            )
        raise BertTasksError(f"{self.path}: could not take the run folder's lock (other trainings keep starting in it)")

    def release(self) -> None:
        if self.held:
            self._remove_if(self.mine)
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def _create(self) -> bool:
        try:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "w") as handle:
            handle.write(json.dumps(self.mine) + "\n")
        return True

    def _read(self) -> Optional[dict[str, Any]]:
        try:
            holder = json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            time.sleep(0.1)  # let a writer finish its one line
            try:
                holder = json.loads(self.path.read_text())
            except FileNotFoundError:
                return None
            except (json.JSONDecodeError, UnicodeDecodeError):
                return {"pid": "?", "host": "?"}  # not ours to judge: treat as held
        return holder if isinstance(holder, dict) else {"pid": "?", "host": "?"}

    def _remove_if(self, holder: dict[str, Any]) -> None:
        """Remove the lock only while it still names ``holder`` (never another training's lock)."""
        aside = self.path.with_name(f"{self.path.name}.{os.getpid()}.old")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            found = json.loads(aside.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            found = None
        if found == holder:
            aside.unlink()
            return
        try:  # another process took the lock over in between: put its lock back
            os.link(aside, self.path)
        except FileExistsError:
            pass
        aside.unlink()
