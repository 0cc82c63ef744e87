"""Log configuration of the CLI: ``--debug`` or ``BOXLITE_LOG=LEVEL`` (debug, info, warning,
error) choose what the library logs to stderr; ``BOXLITE_LOG_FORMAT=json`` makes each record
one JSON object (time, level, logger, message and the record's structured fields, e.g. a
step's ``duration_ms``). Default: errors only, as text (library warnings are noise in a CLI)."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "warn": logging.WARNING,
          "error": logging.ERROR}  # fmt: skip
_warned: list[str] = []
_PLAIN = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a caller passed with ``extra=``."""
    return {k: v for k, v in record.__dict__.items() if k not in _PLAIN and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"boxlite: {record.levelname}: {record.name}: {record.getMessage()}"
        extra = fields(record)
        if extra:
            line += " (" + " ".join(f"{k}={v}" for k, v in extra.items()) + ")"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        body: dict[str, Any] = {
            "time": stamp, "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage(),
        }  # fmt: skip
        body.update(fields(record))
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def level_from_env(debug: bool) -> int:
    if debug:
        return logging.DEBUG
    name = os.environ.get("BOXLITE_LOG", "").strip().lower()
    if name and name not in LEVELS and not _warned:
        _warned.append(name)
        print(f"boxlite: ignoring BOXLITE_LOG={name!r} (use one of {', '.join(LEVELS)})", file=sys.stderr)
    return LEVELS.get(name, logging.ERROR)


def configure(debug: bool) -> None:
    """Send the ``boxlite`` loggers to stderr at the chosen level and format."""
    log = logging.getLogger("boxlite")
    handler = logging.StreamHandler(sys.stderr)
    json_format = os.environ.get("BOXLITE_LOG_FORMAT", "").strip().lower() == "json"
    handler.setFormatter(JsonFormatter() if json_format else TextFormatter())
    log.handlers[:] = [handler]
    log.setLevel(level_from_env(debug))
    log.propagate = False
