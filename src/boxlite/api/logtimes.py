"""Timestamps of a main-process log's lines (``boxlite logs -t --since --until``).

The writer (agent/logfile.py) keeps ``<log>.idx`` beside each log file. On the namespace engine
the box's agent writes it (it runs in the box's namespaces), so it is read as hostile data: at
most ``INDEX_MAX`` bytes, only when its header names the very file being read, records taken
while their offsets and times do not go backwards. Anything else means no (more) timestamps,
never an error."""

from __future__ import annotations

import bisect
import os
import stat
import time

from ..agent.logfile import INDEX_HEADER, INDEX_MAGIC, INDEX_MAX, INDEX_RECORD, INDEX_SUFFIX

MAX_TIME_NS = 2**63 - 1  # 2262-04-11: a larger u64 is not from a clock


class LineTimes:
    """The (offset, time_ns) records of one open log file, read as the file grows."""

    def __init__(self, log_fd: int, log_paths: tuple[str, ...]) -> None:
        """``log_paths``: where the open log file may be named (the index whose header names its
        inode is used: ``<log>.idx``, or ``<log>.1.idx`` when it was rotated meanwhile)."""
        self.offsets: list[int] = []
        self.times: list[int] = []
        self.fd = -1
        self.pos = INDEX_HEADER.size
        self.trusted_to: int | None = None  # a bad record was seen: lines past this offset have no time
        for log_path in log_paths:
            if self.fd < 0:
                self.fd = _open_index(log_path + INDEX_SUFFIX, os.fstat(log_fd).st_ino)
        self.refresh()

    def refresh(self) -> None:
        """Take the records written since the last look (bounded; stops at the first bad one)."""
        if self.fd < 0:
            return
        want = INDEX_MAX - self.pos
        want -= want % INDEX_RECORD.size
        try:
            data = os.pread(self.fd, want, self.pos) if want > 0 else b""
        except OSError:
            data = b""
        usable = len(data) - len(data) % INDEX_RECORD.size
        for offset, stamp in INDEX_RECORD.iter_unpack(data[:usable]):
            if stamp > MAX_TIME_NS or (self.offsets and (offset <= self.offsets[-1] or stamp < self.times[-1])):
                self.close()  # hostile or broken: what came before stays
                self.trusted_to = self.offsets[-1] if self.offsets else -1
                return
            self.offsets.append(offset)
            self.times.append(stamp)
        self.pos += usable

    def at(self, offset: int) -> int | None:
        """When the line starting at ``offset`` was written (None: unknown)."""
        if self.trusted_to is not None and offset > self.trusted_to:
            return None
        i = bisect.bisect_right(self.offsets, offset) - 1
        return self.times[i] if i >= 0 else None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _open_index(path: str, log_ino: int) -> int:
    """An fd of the index at ``path`` if it is a regular file describing the log ``log_ino``, else -1."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return -1
    try:
        header = INDEX_HEADER.pack(INDEX_MAGIC, log_ino)
        if stat.S_ISREG(os.fstat(fd).st_mode) and os.pread(fd, INDEX_HEADER.size, 0) == header:
            fd, found = -1, fd
            return found
    except OSError:
        pass
    finally:
        if fd >= 0:
            os.close(fd)
    return -1


class Stamper:
    """Turns the bytes of one log file, read in order, into output lines: prefixed with their
    time (``-t``) and kept only within ``since``/``until`` (lines of unknown time are kept)."""

    def __init__(self, times: LineTimes, stamps: bool, since: int | None, until: int | None) -> None:
        self.times = times
        self.stamps, self.since, self.until = stamps, since, until
        self.line_time: int | None = None  # of the line being continued (None: unknown)
        self.keep = True
        self.mid_line = False

    def render(self, data: bytes, offset: int) -> bytes:
        """``data`` read from ``offset`` of the file."""
        if not data:
            return b""
        self.times.refresh()
        out = bytearray()
        pos = 0
        while pos < len(data):
            end = data.find(b"\n", pos)
            end = len(data) if end < 0 else end + 1
            if not self.mid_line:
                self.line_time = self.times.at(offset + pos)
                self.keep = self._wanted(self.line_time)
                if self.keep and self.stamps and self.line_time is not None:
                    out += format_time(self.line_time).encode() + b" "
            if self.keep:
                out += data[pos:end]
            self.mid_line = data[end - 1] != 0x0A
            pos = end
        return bytes(out)

    def _wanted(self, stamp: int | None) -> bool:
        if stamp is None:
            return True
        return (self.since is None or stamp >= self.since) and (self.until is None or stamp <= self.until)


def format_time(ns: int) -> str:
    """RFC 3339 with nanoseconds, UTC (as ``docker logs -t``)."""
    seconds, frac = divmod(ns, 10**9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac:09d}Z"
