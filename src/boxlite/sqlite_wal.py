"""Opening SQLite databases that several processes share (WAL mode, waiting on locks)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path


def enable_wal(db: sqlite3.Connection, timeout: float = 30.0) -> None:
    """Switch ``db`` to WAL. The switch needs a moment of exclusive access and SQLite can answer
    "database is locked" at once instead of waiting, when another process opens the same file
    at the same time: retry until ``timeout``. WAL is persistent, so this is a one-off per file."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def make_private(path: Path) -> None:
    """Create ``path`` (and fix its WAL files) with mode 0600: box state holds users' env values
    and options, which no other host user may read (SQLite gives its -wal/-shm files the
    database file's mode)."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600))
    for name in (str(path), f"{path}-wal", f"{path}-shm"):
        with contextlib.suppress(FileNotFoundError, PermissionError):
            if os.stat(name, follow_symlinks=False).st_mode & 0o077:
                os.chmod(name, 0o600)


def connect(path: Path, timeout: float = 30.0, **kwargs: object) -> sqlite3.Connection:
    """A connection in autocommit mode that waits up to ``timeout`` for other writers; the file
    is private to its owner."""
    make_private(path)
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None, **kwargs)  # type: ignore[call-overload]
    enable_wal(db, timeout)
    return db
