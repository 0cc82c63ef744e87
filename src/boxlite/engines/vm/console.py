"""The VM's serial console on the host, size-capped (stdlib only: the relay process imports it).

QEMU writes the console into a pipe, not a file: a guest printing to its console without end
(a hostile guest root writing /dev/ttyS0, a kernel message loop) would otherwise fill the
host's disk. The shim, and then the relay, drain the pipe into ``console.log``, which keeps
its first ``HEAD_BYTES`` (the boot messages and vminit's stage markers) and at most
``MAX_BYTES`` in all: when full it is cut back to its head plus a marker line, so the most
recent output (what an error message quotes) is always at its end.
"""

from __future__ import annotations

import os

MAX_BYTES = 1 << 20
HEAD_BYTES = 64 << 10
READ_CHUNK = 64 << 10
MARKER = b"\n[boxlite: console output cut here: the log keeps its first and its latest bytes]\n"


class ConsoleLog:
    """Appends to ``path``; never lets it grow past ``max_bytes``."""

    def __init__(self, path: str, max_bytes: int = MAX_BYTES, head_bytes: int = HEAD_BYTES) -> None:
        self.max_bytes = max(int(max_bytes), 2 * len(MARKER) + 2 * READ_CHUNK)
        self.head_bytes = min(int(head_bytes), self.max_bytes // 4)
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        self.size = os.fstat(self.fd).st_size
        self.head = min(self.size, self.head_bytes)  # where a cut truncates to

    def write(self, data: bytes) -> None:
        view = memoryview(data)[: self.max_bytes - self.head - len(MARKER)]
        if self.size + len(view) > self.max_bytes:
            os.ftruncate(self.fd, self.head)
            self.size = self.head
            self._append(MARKER)
        elif self.head < self.head_bytes:
            self.head = min(self.size + len(view), self.head_bytes)
        self._append(view)

    def _append(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            self.size += n
            view = view[n:]

    def pump(self, fd: int) -> bool:
        """Copy what the (non-blocking) pipe ``fd`` holds; False at EOF (QEMU is gone)."""
        while True:
            try:
                data = os.read(fd, READ_CHUNK)
            except BlockingIOError:
                return True
            except InterruptedError:
                continue
            if not data:
                return False
            try:
                self.write(data)
            except OSError:  # host disk full or the like: drop console output, keep draining
                pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
