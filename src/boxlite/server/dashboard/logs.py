"""The end of a box's main-process log, for the dashboard's Logs view."""

from __future__ import annotations

from ...api.logs import box_log_tail
from ...api.runtime import Boxlite

LOG_TAIL = 64 << 10
"""Bytes of a box's log the dashboard shows (its end)."""


async def tail(rt: Boxlite, box_id: str, size: int = LOG_TAIL) -> str:
    """The last ``size`` bytes of the box's main-process log (with its rotated part if short)."""
    return await box_log_tail(rt, box_id, size)
