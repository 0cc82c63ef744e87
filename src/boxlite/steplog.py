"""Timed steps of the library (create, start, exec, pull, ...) logged at DEBUG with their
duration, as structured fields a JSON log formatter can emit (``step``, ``duration_ms``,
``outcome`` and the caller's own, e.g. ``box``). Nothing is printed unless the application
configures logging (the CLI does for ``--debug`` / ``BOXLITE_LOG=debug``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("boxlite.steps")
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


@contextmanager
def step(name: str, logger: logging.Logger = log, **fields: Any) -> Iterator[dict[str, Any]]:
    """Time the body; the yielded dict takes fields learnt inside it (``box`` once created)."""
    if not logger.isEnabledFor(logging.DEBUG):  # the common case: no clock reads, no record
        yield fields
        return
    start = time.monotonic()
    try:
        yield fields
    except BaseException as e:
        ms = round((time.monotonic() - start) * 1000, 1)
        logger.debug("%s failed after %.1f ms: %s", name, ms, e, extra=_extra(fields, name, ms, type(e).__name__))
        raise
    ms = round((time.monotonic() - start) * 1000, 1)
    logger.debug("%s done in %.1f ms", name, ms, extra=_extra(fields, name, ms, "ok"))


def _extra(fields: dict[str, Any], name: str, ms: float, outcome: str) -> dict[str, Any]:
    """The record's fields (a key LogRecord owns, like ``name``, gets a ``field_`` prefix)."""
    out = {(f"field_{k}" if k in _RESERVED else k): v for k, v in fields.items()}
    return {**out, "step": name, "duration_ms": ms, "outcome": outcome}
