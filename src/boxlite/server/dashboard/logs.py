"""The end of a box's main-process log, for the dashboard's Logs view."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from ...api.runtime import Boxlite
from ...errors import BoxliteError, UnsupportedOptionError

LOG_TAIL = 64 << 10
"""Bytes of a box's log the dashboard shows (its end)."""


async def tail(rt: Boxlite, box_id: str, size: int = LOG_TAIL) -> str:
    """The last ``size`` bytes of the box's main-process log (with its rotated part if short),
    decoded leniently: the log is the box's output, any bytes at all."""
    try:
        layout = rt.home.layout(box_id)
    except (BoxliteError, AttributeError, NotImplementedError):
        raise UnsupportedOptionError("box logs", "only for a local runtime") from None
    return await asyncio.to_thread(_read, [layout.main_log, layout.cli_console_log], size)


def _read(candidates: list[Path], size: int) -> str:
    path = next((p for p in candidates if p.exists()), None)
    if path is None:
        return ""
    data = _tail_bytes(path, size)
    if len(data) < size:
        data = _tail_bytes(path.with_name(path.name + ".1"), size - len(data)) + data
    return data.decode("utf-8", "replace")


def _tail_bytes(path: Path, size: int) -> bytes:
    """Not following a symlink: the file is the box's log, its name must not lead elsewhere."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return b""
    with os.fdopen(fd, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        f.seek(max(0, end - size))
        return f.read(size)
