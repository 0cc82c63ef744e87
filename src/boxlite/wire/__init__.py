"""BoxLite's REST wire format, shared by the server (``boxlite.server``) and the REST backend
(``boxlite.backends.rest``). No web framework imports; imports nothing above ``boxlite.errors``."""

from __future__ import annotations

from .errors import decode_error, encode_error, http_status
from .exec import API_PREFIX, DEFAULT_WINDOW, MAX_FRAME, STDERR, STDIN, STDIN_WINDOW, STDOUT, STREAM_NAMES

__all__ = [
    "API_PREFIX", "DEFAULT_WINDOW", "MAX_FRAME", "STDERR", "STDIN", "STDIN_WINDOW", "STDOUT", "STREAM_NAMES",
    "decode_error", "encode_error", "http_status",
]  # fmt: skip
