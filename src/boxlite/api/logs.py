"""Logs a front-end writes itself (the CLI's record of a foreground run), capped like a box's
main-process log: one definition of the cap and the rotation for the whole product."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..agent.logfile import RotatingLog
from ..client.limits import main_log_max
from ..errors import BoxliteError, UnsupportedOptionError

if TYPE_CHECKING:
    from .runtime import Boxlite

__all__ = ["RotatingLog", "box_log_tail", "capped_log"]


def capped_log(path: Path) -> RotatingLog:
    """An append-only log at ``path``, rotated to ``<path>.1`` past ``$BOXLITE_LOG_MAX_BYTES``."""
    return RotatingLog(str(path), main_log_max())


async def box_log_tail(rt: Boxlite, box_id: str, size: int) -> str:
    """The last ``size`` bytes of a box's main-process log (or the CLI's console log of a foreground
    run), with its rotated part when short, decoded leniently: the log is the box's output, any
    bytes at all. Only a local runtime has the files (``UnsupportedOptionError`` otherwise)."""
    try:
        layout = rt.home.layout(box_id)
    except (BoxliteError, AttributeError, NotImplementedError):
        raise UnsupportedOptionError("box logs", "only for a local runtime (not over a REST backend)") from None
    return await asyncio.to_thread(_read_tail, [layout.main_log, layout.cli_console_log], size)


def _read_tail(candidates: list[Path], size: int) -> str:
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
