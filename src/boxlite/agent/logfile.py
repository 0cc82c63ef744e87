"""A size-capped append-only log (the box's main process output), rotated to ``<path>.1``.

Written by the namespace agent and by the VM relay on the host: a box printing without end must
not fill the host disk. Stdlib only (runs in the agent and in the small relay process).

Beside each log file the writer keeps a timestamp index ``<file>.idx`` (``boxlite logs -t
--since``): a header naming the log file's inode, then fixed-size ``(offset, time_ns)`` records,
one when a write starts a line (at most one per ``INDEX_INTERVAL_NS``). It is rotated with the
log; a full index (``INDEX_MAX``) rotates the log early, so every line keeps a timestamp.
"""

from __future__ import annotations

import os
import struct
import time

from . import protocol as p

INDEX_SUFFIX = ".idx"
INDEX_MAGIC = b"BXLIDX1\n"
INDEX_HEADER = struct.Struct(">8sQ")  # magic, inode of the log file it describes
INDEX_RECORD = struct.Struct(">QQ")  # byte offset of a line start in the log, wall clock (ns)
INDEX_MAX = 1 << 20
"""Bytes of one index file at most (65535 records): the reader reads no more."""
INDEX_INTERVAL_NS = 1_000_000
"""Lines started within this much of the last record share its timestamp."""


def log_limit(value: object) -> int:
    """The ``log_max`` of an exec request as a byte count (default ``LOG_MAX``, at least ``LOG_MIN``)."""
    try:
        limit = int(value) if value is not None else p.LOG_MAX  # type: ignore[call-overload]
    except (TypeError, ValueError):
        limit = p.LOG_MAX
    return max(limit, p.LOG_MIN)


class RotatingLog:
    """Appends to ``path``; before a write would make it larger than ``max_bytes`` the file becomes
    ``path.1`` (replacing the previous one) and a new one is started. Each file stays at most
    ``max_bytes`` when writes are at most ``LOG_MIN`` bytes (the relay and agent write ≤ ``CHUNK``)."""

    def __init__(self, path: str, max_bytes: int = p.LOG_MAX) -> None:
        self.path = path
        self.max_bytes = max(int(max_bytes), p.LOG_MIN)
        self.fd = -1
        self.size = 0
        self.index_fd = -1  # the timestamp index; -1 when it cannot be kept (the log goes on without)
        self.index_size = 0
        self.last_mark = 0
        self.at_line_start = True
        self._open()

    def _open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        self.size = os.fstat(self.fd).st_size
        self.at_line_start = True
        self.last_mark = 0
        self._open_index()

    def _open_index(self) -> None:
        """Continue the index of this log file, or start one (another file's index is reset)."""
        try:
            fd = os.open(self.path + INDEX_SUFFIX, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError:
            return
        try:
            header = INDEX_HEADER.pack(INDEX_MAGIC, os.fstat(self.fd).st_ino)
            size = os.fstat(fd).st_size
            if self.size == 0 or size < len(header) or os.pread(fd, len(header), 0) != header:
                os.ftruncate(fd, 0)
                os.pwrite(fd, header, 0)
                size = len(header)
            self.index_size = size - (size - len(header)) % INDEX_RECORD.size
            self.index_fd, fd = fd, -1
        except OSError:
            pass
        finally:
            if fd >= 0:
                os.close(fd)

    def write(self, data: bytes | memoryview) -> int:
        """Append ``data`` (rotating first when it would not fit); returns its length."""
        if self.fd < 0:
            raise ValueError("write to a closed log")
        view = memoryview(data)
        now = time.time_ns()
        if self.size and (self.size + len(view) > self.max_bytes or self._index_full(now)):
            self.rotate()
        if view and self.index_fd >= 0 and now - self.last_mark >= INDEX_INTERVAL_NS:
            self._mark(view, now)
        if view:
            self.at_line_start = view[-1] == 0x0A
        while view:
            n = os.write(self.fd, view)
            self.size += n
            view = view[n:]
        return len(data)

    def _index_full(self, now: int) -> bool:
        """A record is due and the index has no room: the log is rotated early."""
        due = self.index_fd >= 0 and now - self.last_mark >= INDEX_INTERVAL_NS
        return due and self.index_size + INDEX_RECORD.size > INDEX_MAX

    def _mark(self, view: memoryview, now: int) -> None:
        """Record when the first line starting in ``view`` was written (before its bytes are:
        a reader seeing them finds their time)."""
        if self.at_line_start:
            start = 0
        else:
            start = bytes(view).find(b"\n") + 1
            if start <= 0 or start >= len(view):
                return
        try:
            os.pwrite(self.index_fd, INDEX_RECORD.pack(self.size + start, now), self.index_size)
        except OSError:  # a full disk: no more timestamps in this file
            self._close_index()
            return
        self.index_size += INDEX_RECORD.size
        self.last_mark = now

    def _close_index(self) -> None:
        if self.index_fd >= 0:
            os.close(self.index_fd)
            self.index_fd = -1

    def rotate(self) -> None:
        os.close(self.fd)
        self.fd = -1
        self._close_index()
        os.replace(self.path, self.path + ".1")
        try:
            os.replace(self.path + INDEX_SUFFIX, self.path + ".1" + INDEX_SUFFIX)
        except OSError:
            pass
        self._open()

    def flush(self) -> None:
        """Writes go straight to the file (kept for file-object callers)."""

    def close(self) -> None:
        self._close_index()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class SharedLogs:
    """One :class:`RotatingLog` per path, however many writers: detached executions appending to
    the same log (``exec.log``) keep its one cap. With a log each, every writer would rotate the
    file under the others and hold its own unlinked copy: N times the cap on the host's disk."""

    def __init__(self) -> None:
        self._open: dict[str, tuple[RotatingLog, int]] = {}

    def open(self, path: str, max_bytes: int) -> LogLease:
        """A writer of ``path`` (its cap: the first writer's, while any is open)."""
        log, users = self._open.get(path) or (RotatingLog(path, max_bytes), 0)
        self._open[path] = (log, users + 1)
        return LogLease(self, log)

    def _release(self, log: RotatingLog) -> None:
        """One writer less; the last one closes the file (each lease releases once)."""
        users = self._open[log.path][1]
        if users > 1:
            self._open[log.path] = (log, users - 1)
        else:
            del self._open[log.path]
            log.close()


class LogLease:
    """One writer's use of a shared log: ``close`` (idempotent) ends this writer's use only."""

    __slots__ = ("_log", "_logs", "max_bytes", "path")

    def __init__(self, logs: SharedLogs, log: RotatingLog) -> None:
        self._logs = logs
        self._log: RotatingLog | None = log
        self.path, self.max_bytes = log.path, log.max_bytes

    def write(self, data: bytes | memoryview) -> int:
        if self._log is None:
            raise ValueError("write to a closed log")
        return self._log.write(data)

    def close(self) -> None:
        log, self._log = self._log, None
        if log is not None:
            self._logs._release(log)
