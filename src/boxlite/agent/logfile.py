"""A size-capped append-only log (the box's main process output), rotated to ``<path>.1``.

Written by the namespace agent and by the VM relay on the host: a box printing without end must
not fill the host disk. Stdlib only (runs in the agent and in the small relay process).
"""

from __future__ import annotations

import os

from . import protocol as p


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
        self._open()

    def _open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        self.size = os.fstat(self.fd).st_size

    def write(self, data: bytes | memoryview) -> int:
        """Append ``data`` (rotating first when it would not fit); returns its length."""
        if self.fd < 0:
            raise ValueError("write to a closed log")
        view = memoryview(data)
        if self.size and self.size + len(view) > self.max_bytes:
            self.rotate()
        while view:
            n = os.write(self.fd, view)
            self.size += n
            view = view[n:]
        return len(data)

    def rotate(self) -> None:
        os.close(self.fd)
        self.fd = -1
        os.replace(self.path, self.path + ".1")
        self._open()

    def flush(self) -> None:
        """Writes go straight to the file (kept for file-object callers)."""

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
