"""The exec WebSocket's framing: binary frames ``<stream byte><data>`` (0 = stdin, 1 = stdout,
2 = stderr) and JSON text messages with a ``type`` field (see docs/rest.md), credit-based."""

from __future__ import annotations

API_PREFIX = "/v1"
STDIN, STDOUT, STDERR = 0, 1, 2
STREAM_NAMES = {STDOUT: "stdout", STDERR: "stderr"}
DEFAULT_WINDOW = 1 << 20
"""Bytes of one output stream the server may send before the client grants more credit."""
STDIN_WINDOW = 256 * 1024
"""Bytes of stdin the client may send before the server grants more credit."""
MAX_FRAME = 64 * 1024
"""Largest stdin payload a client puts in one binary frame."""
