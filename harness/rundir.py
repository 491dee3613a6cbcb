"""Run directories: one per run, never shared, and a run that died marked as such.

A run directory is created atomically (``mkdir`` without ``exist_ok``; a
numbered suffix where the name is taken) and held by an exclusive lock
(``flock`` on ``.lock``) for as long as its process lives, so two harness
processes can never write one directory. ``--out`` into a folder holding
another run is refused unless forced, and forcing clears it. A directory
whose results say "running" while nobody holds its lock belongs to a run
that was killed (kill -9, power loss, full disk): :func:`mark_dead` says so.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import shutil
from datetime import datetime
from pathlib import Path

from harness.config import ConfigError

LOCK_NAME = ".lock"
#: names a run directory is recognised by
RUN_FILES = ("results.json", "junit.xml", "report.html", LOCK_NAME)


class RunDir:
    """An open, locked run directory (release with :meth:`close`)."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd = fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None


def _lock(path: Path) -> int | None:
    """An exclusive lock on ``path/.lock`` (its fd), or None if another process holds it."""
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")[:60] or "plan"


def open_run_dir(out: Path | None, name: str, root: Path = Path("runs"), force: bool = False) -> RunDir:
    """Create and lock a run directory: ``out``, or ``root/<time>-<name>`` (made unique with a suffix).

    Raises :class:`ConfigError` (exit 2, nothing transmitted) when it cannot be
    created or written, when ``out`` holds another run and ``force`` is not
    given, or when another process is writing it.
    """
    try:
        if out is None:
            base = root / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{slug(name)}"
            root.mkdir(parents=True, exist_ok=True)
            for k in range(1, 1000):
                path = base if k == 1 else base.with_name(f"{base.name}-{k}")
                try:
                    path.mkdir()
                    break
                except FileExistsError:
                    continue
            else:
                raise ConfigError(f"no free run directory name next to {base}")
        else:
            path = Path(out)
            path.mkdir(parents=True, exist_ok=True)
        fd = _lock(path)
        if fd is None:
            raise ConfigError("another harness process is writing this run directory", path)
        others = [p for p in path.iterdir() if p.name != LOCK_NAME]
        if others and out is not None:
            if not any((path / n).exists() for n in RUN_FILES if n != LOCK_NAME) and not force:
                os.close(fd)
                raise ConfigError("the output folder is not empty (it holds no run); give --force to clear it "
                                  "or choose another --out", path)
            if not force:
                os.close(fd)
                raise ConfigError("the output folder holds another run; give --force to replace it or choose "
                                  "another --out", path)
            for p in others:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        return RunDir(path, fd)
    except OSError as e:
        raise ConfigError(f"cannot create the run directory: {e.strerror or e}", getattr(e, "filename", None)
                          or out or root) from None


def is_locked(path: Path) -> bool:
    """Whether a live process holds the run directory."""
    try:
        fd = os.open(Path(path) / LOCK_NAME, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def mark_dead(path: Path) -> dict:
    """The run's results, marked ``killed`` (verdict ERROR) if they say running but no process holds the run.

    Returns the (possibly updated) results; the caller rewrites the files.
    """
    data = json.loads((Path(path) / "results.json").read_text(encoding="utf-8"))
    if data.get("status") == "running" and not is_locked(path):
        for tmp in Path(path).glob(".*.tmp"):  # a write the kill cut short: never read, now removed
            tmp.unlink(missing_ok=True)
        data["status"] = "killed"
        data["verdict"] = "ERROR"
        data["note"] = ("the run's process died before it completed (killed, power loss or full disk); "
                        f"{len(data.get('steps', []))} step(s) had been recorded")
    return data


class ResultsWriteError(RuntimeError):
    """The run directory cannot be written (full disk, read-only, removed): the run must stop."""


def write_atomic(path: Path, text: str, durable: bool = True) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: readers see the old or the new file,
    never a part. The temporary file is removed when writing fails (a full disk leaves nothing behind).
    ``durable``: on disk (fsync) before the rename; files rebuilt from results.json (``harness report``) skip it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def jsonable(obj):
    """Make numpy scalars/arrays and non-finite floats JSON-safe (what a run directory's JSON files hold)."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj
