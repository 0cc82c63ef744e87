"""BoxLite agent protocol: the one module both the host and the guest agent import.

Wire format (big endian), specified in docs/protocol.md::

    u32 length | u8 kind | u32 channel | payload[length]

``channel`` is the only correlation id: a request's channel is echoed by its response, and an
exec's streams, control messages and exit status travel on the exec request's channel. JSON
bodies never contain channel ids, so a relay may renumber channels without parsing bodies.
Stdlib only.
"""

from __future__ import annotations

import os
import struct

from . import leanjson

TYPE_CHECKING = False  # not imported from typing: the relay process stays small without it
if TYPE_CHECKING:
    from collections.abc import Iterator  # not at run time: collections costs ~3 ms to import
    from typing import Any

VERSION = 1

HEADER = struct.Struct(">IBI")
HEADER_SIZE = HEADER.size
MAX_PAYLOAD = 1 << 20
"""Largest payload a peer accepts; data chunks are at most ``CHUNK``."""
CHUNK = 64 * 1024

# Frame kinds.
REQUEST = 1  # host -> agent, JSON {"op": ..., ...}
RESPONSE = 2  # agent -> host, JSON {"ok": true, ...} | {"ok": false, "error": {...}}
STDIN = 3  # host -> agent, raw bytes; empty payload = end of input
STDOUT = 4  # agent -> host, raw bytes; empty payload = end of stream
STDERR = 5  # agent -> host, raw bytes; empty payload = end of stream
CREDIT = 6  # either way, CREDIT_BODY: (stream kind, bytes granted)
EXIT = 7  # agent -> host, JSON exit status of an exec
CONTROL = 8  # host -> agent, JSON {"op": "signal"|"kill"|"resize", ...} on an exec channel

CREDIT_BODY = struct.Struct(">BI")

DEFAULT_OUTPUT_WINDOW = 1 << 20
"""Bytes of stdout (and of stderr) the agent may send before the host grants more."""
STDIN_WINDOW = 256 * 1024
"""Bytes of stdin the host may send before the agent grants more."""

LOG_MAX = 10 << 20
"""Default size cap of a detached execution's log file (exec ``log_max``); when the next chunk
would pass it the file is rotated to ``<log>.1`` (one old file kept): at most twice this on disk."""
LOG_MIN = 2 * CHUNK
"""Smallest ``log_max`` honoured (a smaller value is raised to this)."""

SIGNAL_EXIT_BASE = 128
"""A process killed by signal N exits with status 128 + N (the shell convention)."""


class FrameError(ValueError):
    """Bytes on the wire that are not a valid frame."""


def encode(kind: int, channel: int, payload: bytes = b"") -> bytes:
    """One frame as bytes."""
    if len(payload) > MAX_PAYLOAD:
        raise FrameError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return HEADER.pack(len(payload), kind, channel) + payload


def encode_json(kind: int, channel: int, body: dict[str, Any]) -> bytes:
    return encode(kind, channel, leanjson.dumps(body).encode())


def encode_credit(channel: int, stream: int, amount: int) -> bytes:
    return encode(CREDIT, channel, CREDIT_BODY.pack(stream, amount))


def decode_json(payload: bytes) -> dict[str, Any]:
    try:
        body = leanjson.loads(payload)
    except ValueError as e:
        raise FrameError(f"invalid JSON body: {e}") from None
    if not isinstance(body, dict):
        raise FrameError("JSON body is not an object")
    return body


def decode_credit(payload: bytes) -> tuple[int, int]:
    if len(payload) != CREDIT_BODY.size:
        raise FrameError("bad CREDIT body")
    stream, amount = CREDIT_BODY.unpack(payload)
    return stream, amount


def error_body(kind: str, message: str, errno: int | None = None) -> dict[str, Any]:
    """A failed RESPONSE body; ``kind`` names the error class the host should raise and
    ``errno`` (when the failure was a system error) lets it tell "not found" from "denied"."""
    error: dict[str, Any] = {"type": kind, "message": message}
    if errno:
        error["errno"] = errno
    return {"ok": False, "error": error}


CWD_FAILURE = "working directory "
"""How the message of a command whose working directory cannot be entered begins."""


def exec_failure_status(errno: int | None, message: str = "") -> int:
    """Shell convention for a command that could not start: 127 not found, 126 not executable
    (also: its working directory cannot be entered, whatever the errno)."""
    if message.startswith(CWD_FAILURE):
        return 126
    return 127 if errno in (None, 0, 2, 20) else 126  # ENOENT, ENOTDIR


def exit_status(wait_status: int) -> tuple[int, int | None]:
    """(exit code, signal) from an ``os.waitpid`` status, signals as 128 + N."""
    if wait_status & 0x7F == 0:  # WIFEXITED
        return (wait_status >> 8) & 0xFF, None
    sig = wait_status & 0x7F
    return SIGNAL_EXIT_BASE + sig, sig


class FrameReader:
    """Incremental frame parser: feed bytes, iterate complete frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    def pending(self) -> bytes:
        """Bytes received but not yet part of a complete frame."""
        return bytes(self._buf)

    def __iter__(self) -> Iterator[tuple[int, int, bytes]]:
        buf = self._buf
        pos = 0
        try:
            while len(buf) - pos >= HEADER_SIZE:
                length, kind, channel = HEADER.unpack_from(buf, pos)
                if length > MAX_PAYLOAD:
                    raise FrameError(f"frame of {length} bytes exceeds {MAX_PAYLOAD}")
                end = pos + HEADER_SIZE + length
                if len(buf) < end:
                    break
                payload = bytes(buf[pos + HEADER_SIZE : end])
                pos = end
                yield kind, channel, payload
        finally:
            del buf[:pos]


# Start-up status lines: what a box's boot process (namespace: nsboot; VM: the shim) reports to the
# engine on a pipe, one line each: ``pid <host pid>``, then ``ready [<json>]``, ``template <path>``
# (VM template saved) or ``error <message>``.
STATUS_PID = "pid"
STATUS_READY = "ready"
STATUS_TEMPLATE = "template"
STATUS_ERROR = "error"
STATUS_FINAL = (STATUS_READY, STATUS_TEMPLATE, STATUS_ERROR)
STATUS_KEEPER = "keeper"
"""Namespace engine: ``keeper <pid>``: the keeper holds the box (and its pasta configured the network)."""
STATUS_NET_ERROR = "neterror"
"""Namespace engine: ``neterror <message>``: pasta could not set up the box network (the box is killed)."""
STATUS_LINE_MAX = 64 * 1024
"""Longest status line a reader accepts (a ``ready`` line carries a small JSON of timings)."""


class StatusLine:
    """One parsed status line (a plain class: ``typing.NamedTuple`` would import typing in the relay)."""

    __slots__ = ("arg", "word")

    def __init__(self, word: str, arg: str = "") -> None:
        self.word, self.arg = word, arg

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StatusLine) and (self.word, self.arg) == (other.word, other.arg)

    def __hash__(self) -> int:
        return hash((self.word, self.arg))

    def __repr__(self) -> str:
        return f"StatusLine({self.word!r}, {self.arg!r})"


def status_line(word: str, arg: str = "") -> bytes:
    """One status line as bytes (newlines in ``arg`` folded: a line is one record)."""
    text = f"{word} {arg}" if arg else word
    return (text.replace("\n", " ") + "\n").encode()


def parse_status(line: bytes | str) -> StatusLine:
    """``b"pid 42\\n"`` -> ``StatusLine("pid", "42")``; an empty line gives word ``""`` (EOF)."""
    text = line.decode(errors="replace") if isinstance(line, bytes) else line
    word, _, arg = text.strip().partition(" ")
    return StatusLine(word, arg)


def lifeline_closed(fd: int) -> bool:
    """True when the owner's lifeline (a pipe only the owner writes to) reports that the owner is gone.

    The owner never writes, so a readable lifeline means EOF (or an error): the owner died or
    closed it. Stray bytes or a spurious wake-up (``EAGAIN``) leave the box alone.
    """
    try:
        return os.read(fd, 64) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
