"""The secret proxy's fast-path counters file: its name and its reader.

The proxy (..net.secretproxy) writes four fixed-width numbers there; the engines read them for a
box's network metrics. Kept apart so that starting a box does not import the proxy itself (its
ctypes and codecs cost ~2 ms of every ``boxlite run``)."""

from __future__ import annotations

import os

STATS_NAME = "secretproxy.stats"
"""File in the box dir: bytes received from the box, sent to it, segments in, segments out
(secretproxy.STATS_NAME: the proxy runs as a script and imports nothing of the package)."""


def read_stats(path: str) -> list[int] | None:
    """The four numbers the proxy wrote at ``path`` (None: none, or unreadable)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fields = os.read(fd, 256).split()
    finally:
        os.close(fd)
    if len(fields) != 4 or not all(f.isdigit() and len(f) <= 20 for f in fields):
        return None
    return [int(f) for f in fields]
