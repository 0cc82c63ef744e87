"""Logs a front-end writes itself (the CLI's record of a foreground run), capped like a box's
main-process log: one definition of the cap and the rotation for the whole product."""

from __future__ import annotations

from pathlib import Path

from ..agent.logfile import RotatingLog
from ..client.limits import main_log_max

__all__ = ["RotatingLog", "capped_log"]


def capped_log(path: Path) -> RotatingLog:
    """An append-only log at ``path``, rotated to ``<path>.1`` past ``$BOXLITE_LOG_MAX_BYTES``."""
    return RotatingLog(str(path), main_log_max())
