"""Host side of the agent protocol: one asyncio connection to a box's agent.

The agent is not trusted (a box's root may replace it): it may send only as much output as it
was granted credit for (so what is buffered here stays within the window), frames no larger
than ``MAX_PAYLOAD``, and must answer within deadlines. Breaking either drops the connection
with ``AgentProtocolError`` or raises ``AgentTimeoutError``; every call on the box then fails cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import errors
from ..agent import protocol as p
from ..aio import within
from .credit import StdinWindow
from .limits import main_log_max
from .streams import ChunkStream

CONNECT_TIMEOUT = 10.0
"""Seconds for the agent's socket to accept a connection."""
REQUEST_TIMEOUT = 30.0
"""Default seconds for the agent to answer a request (``hello``, ``stats``, ...)."""
EXEC_TIMEOUT = 60.0
"""Default seconds for the agent to answer an ``exec`` (the process has started or failed to)."""

_ERRORS: dict[str, type[errors.BoxliteError]] = {
    "ExecError": errors.ExecError,
    "ConfigError": errors.ConfigError,
    "EngineError": errors.EngineError,
    "RpcError": errors.RpcError,
}


def _error_from(body: dict[str, Any], command: str = "") -> errors.BoxliteError:
    err = body.get("error") or {}
    cls = _ERRORS.get(str(err.get("type")), errors.BoxliteError)
    message = str(err.get("message", "agent error"))
    if cls is errors.ExecError:
        return errors.ExecError(command, p.exec_failure_status(err.get("errno"), message), message)
    return cls(message)


class OutputStream(ChunkStream):
    """One output stream of an agent execution; reading grants the agent more credit."""

    def __init__(self, channel: ExecChannel, kind: int) -> None:
        super().__init__()
        self._channel, self._kind = channel, kind

    async def _consumed(self, amount: int) -> None:
        self._channel._grant(self._kind, amount)


class ExecChannel:
    """One execution on the agent: streams in, stdin and control out, exit status at the end."""

    def __init__(self, client: AgentClient, channel: int, command: str, window: int = p.DEFAULT_OUTPUT_WINDOW) -> None:
        self.client, self.channel, self.command = client, channel, command
        self.pid = 0
        self.stdout = OutputStream(self, p.STDOUT)
        self.stderr = OutputStream(self, p.STDERR)
        self.exit: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._out_credit = {p.STDOUT: window, p.STDERR: window}  # what the agent may still send
        self._stdin = StdinWindow(p.STDIN_WINDOW, p.CHUNK)

    def _grant(self, kind: int, amount: int) -> None:
        if amount and not self.client.closed:
            self._out_credit[kind] += amount
            self.client._send(p.encode_credit(self.channel, kind, amount))

    def _on_output(self, kind: int, payload: bytes) -> None:
        """Output from the agent, which must stay within the credit granted (else: violation)."""
        if len(payload) > self._out_credit[kind]:
            name = "STDOUT" if kind == p.STDOUT else "STDERR"
            raise _Violation(f"sent {len(payload)} bytes of {name} with {self._out_credit[kind]} bytes of credit")
        self._out_credit[kind] -= len(payload)
        (self.stdout if kind == p.STDOUT else self.stderr)._feed(payload)

    async def write_stdin(self, data: bytes) -> None:
        if await self._stdin.write(data, self._send_stdin, self.exit.done):
            await self.client._drain()

    async def _send_stdin(self, chunk: bytes) -> None:
        self.client._send(p.encode(p.STDIN, self.channel, chunk))

    async def close_stdin(self) -> None:
        if self._stdin.close():
            self.client._send(p.encode(p.STDIN, self.channel, b""))
            await self.client._drain()

    @property
    def stdin_closed(self) -> bool:
        return self._stdin.closed

    async def control(self, body: dict[str, Any]) -> None:
        if not self.exit.done():
            self.client._send(p.encode_json(p.CONTROL, self.channel, body))
            await self.client._drain()

    def _on_credit(self, amount: int) -> None:
        self._stdin.grant(amount)

    def _fail(self, exc: BaseException) -> None:
        self.stdout._feed(b"")
        self.stderr._feed(b"")
        if not self.exit.done():
            self.exit.set_exception(exc)
            self.exit.exception()  # retrieved here: wait() re-raises it when asked
        self._stdin.wake()


@contextlib.contextmanager
def unix_address(path: Path) -> Iterator[str]:
    """An address for ``path`` that fits ``sun_path`` (108 bytes): long paths go through
    ``/proc/self/fd/<dir fd>/<name>`` while the context lasts."""
    target = str(path)
    if len(target.encode()) <= 100:
        yield target
        return
    dir_fd = os.open(path.parent, os.O_PATH | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{dir_fd}/{path.name}"
    finally:
        os.close(dir_fd)


class _Violation(Exception):
    """The agent broke the protocol (internal: becomes ``AgentProtocolError``)."""


class AgentClient:
    """A connection to one agent; many executions multiplexed by channel."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, label: str) -> None:
        self._reader, self._writer, self.label = reader, writer, label
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._execs: dict[int, ExecChannel] = {}
        self._closed = False
        self._error: errors.BoxDiedError | None = None  # why the connection ended
        self.loop = asyncio.get_running_loop()
        self._task = self.loop.create_task(self._read_loop())

    @classmethod
    async def connect(cls, path: Path, label: str = "box", timeout: float = CONNECT_TIMEOUT) -> AgentClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            with unix_address(path) as target:
                await within(asyncio.get_running_loop().sock_connect(sock, target), timeout)
        except asyncio.TimeoutError:
            sock.close()
            msg = f"the agent of {label} did not accept a connection within {timeout}s"
            raise errors.AgentTimeoutError(msg) from None
        except OSError as e:
            sock.close()
            raise errors.BoxDiedError(f"cannot reach the agent of {label}: {e.strerror or e}") from None
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=1 << 20)
        return cls(reader, writer, label)

    @property
    def closed(self) -> bool:
        """True once the connection ended, or when it belongs to another (finished) event loop."""
        if self._closed:
            return True
        try:
            return asyncio.get_running_loop() is not self.loop
        except RuntimeError:
            return False

    def _died(self) -> errors.BoxDiedError:
        return self._error or errors.BoxDiedError(f"the connection to {self.label} is closed")

    def _send(self, frame: bytes) -> None:
        if self._closed:
            raise self._died()
        self._writer.write(frame)

    async def _drain(self) -> None:
        try:
            await self._writer.drain()
        except ConnectionError as e:
            raise self._error or errors.BoxDiedError(f"lost the connection to {self.label}: {e}") from None

    async def _call(self, channel: int, body: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        """Send a REQUEST on ``channel`` and wait for its RESPONSE, all within ``timeout``."""
        try:
            frame = p.encode_json(p.REQUEST, channel, body)
        except p.FrameError as e:  # too large for one frame: the caller's input, refused before anything went out
            what = " (its arguments and environment)" if body.get("op") == "exec" else ""
            raise errors.ConfigError(
                f"{self.label}: the {body.get('op')!r} request{what} is too large for the agent protocol: {e}"
            ) from None
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[channel] = fut

        async def exchange() -> dict[str, Any]:
            self._send(frame)
            await self._drain()
            return await fut

        try:
            return await within(exchange(), timeout)
        except asyncio.TimeoutError:
            raise errors.AgentTimeoutError(
                f"{self.label}: agent did not answer {body.get('op')!r} within {timeout}s"
            ) from None
        finally:
            self._pending.pop(channel, None)

    async def request(self, op: str, timeout: float | None = REQUEST_TIMEOUT, **body: Any) -> dict[str, Any]:
        reply = await self._call(next(self._ids), {"op": op, **body}, timeout)
        if not reply.get("ok"):
            raise _error_from(reply)
        return reply

    async def exec(self, body: dict[str, Any], command: str, timeout: float | None = EXEC_TIMEOUT) -> ExecChannel:
        """Start an execution; ``timeout`` bounds the wait for the agent's answer (not the command)."""
        channel = next(self._ids)
        if body.get("detach") and "log_max" not in body:
            body = {**body, "log_max": main_log_max()}  # its log's cap (the agent or VM relay rotates it)
        window = body.get("window") or p.DEFAULT_OUTPUT_WINDOW
        ch = ExecChannel(self, channel, command, int(window))
        self._execs[channel] = ch
        try:
            reply = await self._call(channel, {"op": "exec", **body}, timeout)
        except errors.ConfigError:  # refused before it was sent: nothing to kill
            self._execs.pop(channel, None)
            raise
        except BaseException:
            self._execs.pop(channel, None)
            # cancelled or timed out after the request went out: the process may start; nobody
            # would read it or end its stdin, so it is killed (the agent handles frames in order)
            with contextlib.suppress(errors.BoxliteError):
                self._send(p.encode_json(p.CONTROL, channel, {"op": "kill"}))
            raise
        if not reply.get("ok"):
            self._execs.pop(channel, None)
            raise _error_from(reply, command)
        ch.pid = int(reply.get("pid", 0))
        if body.get("detach"):  # nothing more comes on this channel: its output goes to a log
            self._execs.pop(channel, None)
        return ch

    async def _read_loop(self) -> None:
        frames = p.FrameReader()
        try:
            while True:
                data = await self._reader.read(1 << 18)
                if not data:
                    break
                frames.feed(data)
                for kind, channel, payload in frames:
                    self._dispatch(kind, channel, payload)
        except (p.FrameError, _Violation) as e:
            self._error = errors.AgentProtocolError(f"the agent of {self.label} broke the protocol ({e}): disconnected")
            self._writer.transport.abort()
        except (ConnectionError, OSError):
            pass
        finally:
            self._on_close()

    def _dispatch(self, kind: int, channel: int, payload: bytes) -> None:
        if kind == p.RESPONSE:
            fut = self._pending.get(channel)
            if fut is not None and not fut.done():
                fut.set_result(p.decode_json(payload))
            return
        ch = self._execs.get(channel)
        if ch is None:
            return
        if kind in (p.STDOUT, p.STDERR):
            ch._on_output(kind, payload)
            if ch.stdout.eof and ch.stderr.eof and ch.exit.done():
                self._execs.pop(channel, None)
        elif kind == p.CREDIT:
            stream, amount = p.decode_credit(payload)
            if stream == p.STDIN:
                ch._on_credit(amount)
        elif kind == p.EXIT:
            if not ch.exit.done():
                ch.exit.set_result(p.decode_json(payload))
            ch._stdin.wake()
            if ch.stdout.eof and ch.stderr.eof:
                self._execs.pop(channel, None)

    def _on_close(self) -> None:
        self._closed = True
        died = self._error or errors.BoxDiedError(f"the agent of {self.label} went away")
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(died)
        for ch in self._execs.values():
            ch._fail(died)
        self._execs.clear()

    async def close(self) -> None:
        if not self._writer.is_closing():
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        self._on_close()
