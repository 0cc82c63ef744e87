"""One remote execution: the exec WebSocket behind the standard ``Execution`` object.

``RemoteChannel`` is a ``backends.base.ExecChannel`` like the agent's (streams, stdin with credit,
control, exit future), so ``api.execution.Execution`` works on it unchanged. Both sides keep
to their credit: stdin is sent only within what the server granted (a client that does not is
disconnected), and a server sending more output than granted is dropped with ``RpcError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from ...agent.protocol import MAX_PAYLOAD
from ...client.credit import StdinWindow
from ...client.streams import ChunkStream
from ...errors import BoxDiedError, BoxliteError, ConfigError, RpcError
from ...wire import DEFAULT_WINDOW, MAX_FRAME, STDERR, STDIN, STDOUT, decode_error
from .transport import Transport


class RemoteOutput(ChunkStream):
    """One output stream of a remote execution; reading grants the server more credit."""

    def __init__(self, channel: RemoteChannel, name: str, kind: int) -> None:
        super().__init__()
        self._channel, self._name, self._kind = channel, name, kind

    async def _consumed(self, amount: int) -> None:
        self._channel._out_credit[self._kind] += amount
        await self._channel._send_json({"type": "credit", "stream": self._name, "bytes": amount})


class RemoteChannel:
    """Client end of ``WS /v1/boxes/{id}/exec``."""

    def __init__(self, ws: Any, command: str, started: dict[str, Any]) -> None:
        self._ws, self.command = ws, command
        self.id = str(started.get("id", ""))
        self.pid = int(started.get("pid", 0))
        self.stdout = RemoteOutput(self, "stdout", STDOUT)
        self.stderr = RemoteOutput(self, "stderr", STDERR)
        self._out_credit = {STDOUT: DEFAULT_WINDOW, STDERR: DEFAULT_WINDOW}  # what the server may still send
        self._error: BoxliteError | None = None
        self.exit: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._stdin = StdinWindow(int(started.get("stdin_window", 0)), MAX_FRAME)
        self._task = asyncio.ensure_future(self._read_loop())

    @classmethod
    async def open(cls, transport: Transport, box_id: str, start: dict[str, Any], command: str) -> RemoteChannel:
        from websockets.exceptions import ConnectionClosed

        message = json.dumps({"type": "start", "window": DEFAULT_WINDOW, **start})
        if len(message) > MAX_PAYLOAD:  # the box's agent takes no larger request: refused as locally, unsent
            raise ConfigError(
                f"box {box_id}: the 'exec' request (its arguments and environment) is too large for the agent "
                f"protocol: {len(message)} bytes, more than {MAX_PAYLOAD}"
            )
        ws = await transport.websocket(f"/v1/boxes/{box_id}/exec")
        first: dict[str, Any] = {}
        try:
            await ws.send(message)
            first = json.loads(await ws.recv())
        except ConnectionClosed as e:
            raise BoxDiedError(f"the server closed the exec connection: {e}") from None
        finally:
            if first.get("type") != "started":
                await ws.close()
        if first.get("type") != "started":
            raise decode_error(first)
        return cls(ws, command, first)

    async def _send_json(self, msg: dict[str, Any]) -> None:
        if not self._task.done():
            with contextlib.suppress(Exception):
                await self._ws.send(json.dumps(msg))

    # --- stdin ------------------------------------------------------------------------------
    async def write_stdin(self, data: bytes) -> None:
        await self._stdin.write(data, self._send_stdin, lambda: self.exit.done() or self._task.done())

    async def _send_stdin(self, chunk: bytes) -> None:
        try:
            await self._ws.send(bytes([STDIN]) + chunk)
        except Exception as e:
            raise BoxDiedError(f"lost the connection to the server: {e}") from None

    async def close_stdin(self) -> None:
        if self._stdin.close():
            await self._send_json({"type": "close_stdin"})

    @property
    def stdin_closed(self) -> bool:
        return self._stdin.closed

    # --- control ------------------------------------------------------------------------------
    async def control(self, body: dict[str, Any]) -> None:
        """``{"op": "kill"|"signal"|"resize", ...}`` as for the local agent channel."""
        if not self.exit.done():
            msg = {k: v for k, v in body.items() if k != "op"}
            await self._send_json({"type": body["op"], **msg})

    async def close(self) -> None:
        """Drop the connection (the server kills the command if it is still running)."""
        await self._ws.close()
        with contextlib.suppress(BaseException):
            await self._task

    # --- incoming ------------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        streams = {STDOUT: self.stdout, STDERR: self.stderr}
        try:
            async for msg in self._ws:
                if isinstance(msg, bytes):
                    if msg[:1] and msg[0] in streams and len(msg) > 1:
                        if len(msg) - 1 > self._out_credit[msg[0]]:
                            self._error = RpcError("the server sent more output than the credit granted")
                            await self._ws.close(code=1008)
                            break
                        self._out_credit[msg[0]] -= len(msg) - 1
                        streams[msg[0]]._feed(msg[1:])
                    continue
                self._on_message(json.loads(msg))
        except Exception:  # connection lost: handled below like a dead agent
            pass
        finally:
            self._on_close()

    def _on_message(self, m: dict[str, Any]) -> None:
        kind = m.get("type")
        if kind == "eof":
            (self.stderr if m.get("stream") == "stderr" else self.stdout)._feed(b"")
        elif kind == "credit":
            self._stdin.grant(int(m.get("bytes", 0)))
        elif kind == "exit" and not self.exit.done():
            if m.get("exit_code") == -1 and m.get("error_message") and not m.get("signal"):
                self._fail(BoxDiedError(str(m["error_message"])))
            else:
                self.exit.set_result(m)
            self._stdin.wake()

    def _fail(self, exc: BaseException) -> None:
        if not self.exit.done():
            self.exit.set_exception(exc)
            self.exit.exception()  # retrieved here: Execution.wait() handles it

    def _on_close(self) -> None:
        self._fail(self._error or BoxDiedError("lost the connection to the server"))
        for stream in (self.stdout, self.stderr):
            if not stream.eof:
                stream._feed(b"")
        self._stdin.wake()
