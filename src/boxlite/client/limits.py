"""Host-side limits a user may tune through the environment."""

from __future__ import annotations

import os

from ..agent import protocol as p
from ..errors import ConfigError

LOG_MAX_ENV = "BOXLITE_LOG_MAX_BYTES"


def main_log_max() -> int:
    """Size cap in bytes of a box's ``run/main.log`` (one rotated ``main.log.1`` is kept besides):
    ``$BOXLITE_LOG_MAX_BYTES`` when set (at least ``LOG_MIN``), else ``LOG_MAX`` (10 MiB)."""
    raw = os.environ.get(LOG_MAX_ENV, "").strip()
    if not raw:
        return p.LOG_MAX
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{LOG_MAX_ENV} must be a number of bytes, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{LOG_MAX_ENV} must be > 0, got {value}")
    return max(value, p.LOG_MIN)
