"""Messaging for code running in a managed box (BoxLite's ``boxlite_runtime``; stdlib only).

Copied into the box by ``ManagedBox.run`` and importable there as ``boxlite_runtime``::

    from boxlite_runtime import send_message, publish_event, BOX_NAME

Protocol: one JSON object per line. The box writes to a private copy of its original stdout
(``print`` in handlers goes to stderr instead, so it cannot corrupt the channel) and reads stdin.

    box -> host: {"type": "send", "target": NAME, "data": ..., "request_id": ID}
                 {"type": "publish", "event": EVENT, "data": ...}
                 {"type": "response", "request_id": ID, "result": ...}  (or "error": TEXT)
    host -> box: {"type": "message", "sender": NAME, "data": ..., "request_id": ID}
                 {"type": "event", "sender": NAME, "event": EVENT, "data": ...}
                 {"type": "reply", "request_id": ID, "result": ...}  (or "error": TEXT)
                 {"type": "shutdown"}

The host names the sender of every message itself (a box cannot claim another's name) and
refuses lines longer than ``BOXLITE_MAX_MESSAGE_BYTES``; this side refuses to send them.
"""

from __future__ import annotations

import base64
import builtins
import collections
import json
import marshal
import os
import pickle
import select
import sys
import time
import traceback
import types
import uuid
from collections.abc import Callable
from typing import Any

__all__ = [
    "BOX_NAME",
    "MAX_MESSAGE_BYTES",
    "on_event",
    "on_message",
    "publish_event",
    "run_forever",
    "send_message",
    "stop",
]

BOX_NAME = os.environ.get("BOXLITE_BOX_NAME", "unknown")
MAX_MESSAGE_BYTES = int(os.environ.get("BOXLITE_MAX_MESSAGE_BYTES", str(1 << 20)))
REPLY_TIMEOUT = float(os.environ.get("BOXLITE_REPLY_TIMEOUT", "60"))
BACKLOG = 1000

_message_handlers: list[Callable[[str, Any], Any]] = []
_event_handlers: dict[str, list[Callable[[Any], Any]]] = {}
_running = True
_backlog: collections.deque[dict[str, Any]] = collections.deque()
_out: Any = None
_in_fd = 0
_in_buf = b""


class MessageError(RuntimeError):
    """A message could not be sent, or its receiver answered with an error."""


def _channel() -> Any:
    """The protocol's output: the original stdout; fd 1 becomes stderr for everything else."""
    global _out
    if _out is None:
        _out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
        sys.stdout.flush()
        os.dup2(2, 1)
        sys.stdout = sys.stderr
    return _out


def _write(msg: dict[str, Any]) -> None:
    line = json.dumps(msg, separators=(",", ":"))
    if len(line.encode()) > MAX_MESSAGE_BYTES:
        raise MessageError(f"message of {len(line.encode())} bytes exceeds the limit of {MAX_MESSAGE_BYTES}")
    out = _channel()
    out.write(line + "\n")
    out.flush()


def _read(deadline: float | None) -> dict[str, Any] | None:
    """Next message from the host (None: stdin closed); MessageError after ``deadline``."""
    global _in_buf
    while b"\n" not in _in_buf:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([_in_fd], [], [], wait)
        if not ready:
            raise MessageError("no reply from the host in time")
        chunk = os.read(_in_fd, 65536)
        if not chunk:
            return None
        _in_buf += chunk
    line, _in_buf = _in_buf.split(b"\n", 1)
    try:
        msg = json.loads(line)
    except ValueError:
        return {}
    return msg if isinstance(msg, dict) else {}


def send_message(target: str, data: Any) -> Any:
    """Send ``data`` to box ``target`` and return what its handler returned."""
    request_id = uuid.uuid4().hex
    _write({"type": "send", "target": target, "data": data, "request_id": request_id})
    deadline = time.monotonic() + REPLY_TIMEOUT
    while True:
        msg = _read(deadline)
        if msg is None:
            raise MessageError("the host closed the channel")
        if msg.get("type") == "reply" and msg.get("request_id") == request_id:
            if "error" in msg:
                raise MessageError(str(msg["error"]))
            return msg.get("result")
        if msg.get("type") in ("message", "event", "shutdown"):
            if len(_backlog) >= BACKLOG:
                _backlog.popleft()
            _backlog.append(msg)


def publish_event(event: str, data: Any = None) -> None:
    """Send ``event`` to every other running box (fire and forget)."""
    _write({"type": "publish", "event": event, "data": data})


def on_message(handler: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    """Register ``handler(sender, data) -> result`` for messages sent to this box."""
    _message_handlers.append(handler)
    return handler


def on_event(event: str) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    """Register ``handler(data)`` for ``event``."""

    def decorator(handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
        _event_handlers.setdefault(event, []).append(handler)
        return handler

    return decorator


def stop() -> None:
    """Leave ``run_forever`` after the current message."""
    global _running
    _running = False


def _dispatch(msg: dict[str, Any]) -> bool:
    kind = msg.get("type")
    if kind == "shutdown":
        return False
    if kind == "message":
        reply: dict[str, Any] = {"type": "response", "request_id": msg.get("request_id")}
        try:
            if not _message_handlers:
                raise MessageError(f"box {BOX_NAME!r} has no message handler")
            reply["result"] = _message_handlers[0](str(msg.get("sender")), msg.get("data"))
        except Exception as e:
            reply.pop("result", None)
            reply["error"] = f"{type(e).__name__}: {e}"
        try:
            _write(reply)
        except (MessageError, TypeError, ValueError) as e:
            _write({"type": "response", "request_id": msg.get("request_id"), "error": f"unsendable result: {e}"})
    elif kind == "event":
        for handler in _event_handlers.get(str(msg.get("event")), []):
            try:
                handler(msg.get("data"))
            except Exception:
                traceback.print_exc()
    return True


def run_forever() -> None:
    """Handle messages and events until ``stop()``, a shutdown from the host, or stdin closes."""
    global _running
    _running = True
    while _running:
        msg = _backlog.popleft() if _backlog else _read(None)
        if msg is None or not _dispatch(msg):
            break


# --- code shipped by the host (trusted direction: host -> box) -----------------------------


def _decode(enc: Any, memo: dict[int, Any]) -> Any:
    kind = enc[0]
    if kind == "pickle":
        memo[enc[1]] = value = pickle.loads(enc[2])
        return value
    if kind == "module":
        return __import__("boxlite_runtime" if enc[1].endswith(".guest.boxlite_runtime") else enc[1], fromlist=["_"])
    if kind == "ref":
        return memo[enc[1]]
    if kind == "fn":
        _, key, code, name, defaults, kwdefaults, glb, closure = enc
        namespace: dict[str, Any] = {"__builtins__": builtins, "__name__": "__boxlite_main__"}
        fresh = [c for c in closure if c[0] == "cell" and c[1] not in memo]
        for c in fresh:
            memo[c[1]] = types.CellType()
        cells = tuple(memo[c[1]] for c in closure)
        fn = types.FunctionType(marshal.loads(code), namespace, name, None, cells or None)
        memo[key] = fn
        for c in fresh:
            if c[2] is not None:
                memo[c[1]].cell_contents = _decode(c[2], memo)
        fn.__defaults__ = tuple(_decode(d, memo) for d in defaults) if defaults is not None else None
        fn.__kwdefaults__ = {k: _decode(v, memo) for k, v in kwdefaults.items()} if kwdefaults is not None else None
        namespace.update({k: _decode(v, memo) for k, v in glb.items()})
        return fn
    raise ValueError(f"unknown encoding {kind!r}")


def _main(payload_path: str) -> None:
    """Load the host's task and handlers, run the task, then serve messages."""
    global _in_fd
    _channel()
    _in_fd = sys.stdin.fileno()
    with open(payload_path, "rb") as f:
        payload = pickle.loads(base64.b64decode(f.read()))
    if tuple(payload["python"]) != sys.version_info[:2]:
        version = ".".join(map(str, sys.version_info[:2]))
        sys.exit(f"boxlite_runtime: handlers were made by Python {payload['python']}, the box has {version}")
    memo: dict[int, Any] = {}
    for enc in payload["message_handlers"]:
        on_message(_decode(enc, memo))
    for event, encs in payload["event_handlers"].items():
        for enc in encs:
            on_event(event)(_decode(enc, memo))
    if payload["task"] is not None:
        _decode(payload["task"], memo)()
    if _message_handlers or _event_handlers:
        run_forever()
