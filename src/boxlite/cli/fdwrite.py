"""Writing a whole buffer to a file descriptor (stdout/stderr), even one left non-blocking by
another process sharing the terminal. Stdlib only: the lean ``exec`` path imports it too."""

from __future__ import annotations

import os
import select


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``, waiting while it is full (``BrokenPipeError`` propagates)."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[n:]
