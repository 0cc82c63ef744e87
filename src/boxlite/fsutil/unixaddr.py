"""Addresses for unix sockets deep in a home: ``sun_path`` holds at most 107 bytes of path."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

MAX_DIRECT = 100
"""Longer paths go through a directory fd (a margin below ``sun_path``'s 108 bytes)."""


@contextlib.contextmanager
def unix_address(path: Path) -> Iterator[str]:
    """An address for ``path`` that fits ``sun_path``: a long one is reached as
    ``/proc/self/fd/<dir fd>/<name>`` while the context lasts (homes and test directories can be
    far deeper than 107 bytes)."""
    target = str(path)
    if len(target.encode()) <= MAX_DIRECT:
        yield target
        return
    dir_fd = os.open(path.parent, os.O_PATH | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{dir_fd}/{path.name}"
    finally:
        os.close(dir_fd)
