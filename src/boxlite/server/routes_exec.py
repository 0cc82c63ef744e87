"""``WS /v1/boxes/{id}/exec``: one command per WebSocket, streams multiplexed, credit-based.

Client → server: ``{"type": "start", ...ExecStart}`` first; then binary ``\\x00<stdin bytes>``,
``{"type": "close_stdin"}``, ``{"type": "credit", "stream": "stdout"|"stderr", "bytes": n}``,
``{"type": "signal", "signal": n}``, ``{"type": "kill"}``, ``{"type": "resize", "rows", "cols"}``.
Server → client: ``{"type": "started", "id", "pid", "stdin_window"}`` or ``{"type": "error"}``;
binary ``\\x01``/``\\x02`` + output; ``{"type": "eof", "stream"}``; ``{"type": "credit",
"stream": "stdin", "bytes": n}``; ``{"type": "exit", exit_code, signal, timed_out, ...}``.
If the client goes away before the command ends, the command is killed. A client that sends
more stdin than the credit it was granted is disconnected (close code 1008): what the server
holds for a session stays within ``STDIN_WINDOW`` plus one message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError
from starlette.websockets import WebSocketState

from ..api.execution import ExecStream, Execution
from ..errors import BoxliteError, ConfigError
from ..wire import STDERR, STDIN, STDIN_WINDOW, STDOUT, STREAM_NAMES, encode_error
from .schemas import ExecStart
from .state import ws_state

router = APIRouter()
log = logging.getLogger("boxlite.server")


@router.websocket("/v1/boxes/{box_id}/exec")
async def exec_socket(websocket: WebSocket, box_id: str) -> None:
    await websocket.accept()
    try:
        try:
            start = ExecStart.model_validate_json(await websocket.receive_text())
        except ValidationError as e:
            raise ConfigError(f"invalid exec start message: {e}") from None
        box = await ws_state(websocket).box(box_id)
        execution = await box.exec(
            start.command, start.args, env=start.env, tty=start.tty, user=start.user,
            timeout_secs=start.timeout_secs, cwd=start.cwd, stdin=start.stdin, rows=start.rows, cols=start.cols,
        )  # fmt: skip
    except WebSocketDisconnect:
        return
    except Exception as e:  # reported to the client as a typed error (InternalError if unexpected)
        if not isinstance(e, BoxliteError):
            log.exception("exec failed to start")
        await websocket.send_json({"type": "error", "error": encode_error(e)})
        await websocket.close()
        return
    await ExecSession(websocket, execution, start.window).run()


class _Credit:
    def __init__(self, amount: int) -> None:
        self.amount = amount
        self._event = asyncio.Event()

    def add(self, amount: int) -> None:
        self.amount += amount
        self._event.set()

    async def wait(self) -> None:
        while self.amount <= 0:
            self._event.clear()
            await self._event.wait()


class ExecSession:
    """Pumps one execution over one WebSocket until the command ended and its output is sent."""

    def __init__(self, ws: WebSocket, execution: Execution, window: int) -> None:
        self.ws, self.ex = ws, execution
        self.credit = {STDOUT: _Credit(window), STDERR: _Credit(window)}
        self.stdin_q: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.stdin_held = 0  # stdin bytes received and not yet credited back to the client
        self._lock = asyncio.Lock()
        self._exit_sent = False

    async def _send(self, msg: bytes | dict[str, Any]) -> None:
        async with self._lock:
            if isinstance(msg, bytes):
                await self.ws.send_bytes(msg)
            else:
                await self.ws.send_text(json.dumps(msg))

    async def run(self) -> None:
        """Serve the session; the command is killed unless its exit status reached the client."""
        helpers: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(self._receive()),
            asyncio.ensure_future(self._stdin()),
        ]
        work: asyncio.Future[Any] | None = None
        try:
            await self._send({"type": "started", "id": self.ex.id(), "pid": self.ex.pid, "stdin_window": STDIN_WINDOW})
            work = asyncio.gather(
                self._pump(STDOUT, self.ex.stdout()), self._pump(STDERR, self.ex.stderr()), self._exit()
            )
            await asyncio.wait([work, helpers[0]], return_when=asyncio.FIRST_COMPLETED)
        except Exception as e:
            log.debug("exec session ended: %s", e)
        finally:
            if not self._exit_sent:
                with contextlib.suppress(BoxliteError):
                    await self.ex.kill()
            pending = [t for t in (work, *helpers) if t is not None]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if self.ws.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await self.ws.close()

    async def _pump(self, kind: int, stream: ExecStream) -> None:
        """Forward one stream, never more bytes than the client granted."""
        chunks = stream.bytes().__aiter__()
        credit = self.credit[kind]
        pending = b""
        while True:
            await credit.wait()
            if not pending:
                chunk = await anext(chunks, None)
                if chunk is None:
                    break
                pending = chunk
            part, pending = pending[: credit.amount], pending[credit.amount :]
            credit.amount -= len(part)
            await self._send(bytes([kind]) + part)
        await self._send({"type": "eof", "stream": STREAM_NAMES[kind]})

    async def _exit(self) -> None:
        status = await self.ex.wait()
        await self._send({"type": "exit", **asdict(status)})
        self._exit_sent = True

    async def _stdin(self) -> None:
        stdin = self.ex.stdin()
        try:
            while (data := await self.stdin_q.get()) is not None:
                await stdin.send_input(data)
                self.stdin_held -= len(data)
                await self._send({"type": "credit", "stream": "stdin", "bytes": len(data)})
            await stdin.close()
        except BoxliteError as e:
            log.debug("stdin: %s", e)

    async def _receive(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("bytes") is not None:
                data: bytes = msg["bytes"]
                if data[:1] == bytes([STDIN]) and len(data) > 1:
                    self.stdin_held += len(data) - 1
                    if self.stdin_held > STDIN_WINDOW:
                        log.warning("exec %s: the client ignored its stdin credit: disconnected", self.ex.id())
                        await self.ws.close(code=1008, reason="stdin beyond the credit granted")
                        return
                    self.stdin_q.put_nowait(data[1:])
                continue
            try:
                await self._control(json.loads(msg.get("text") or "{}"))
            except (BoxliteError, ValueError, KeyError, TypeError) as e:
                log.debug("control message failed: %s", e)

    async def _control(self, m: dict[str, Any]) -> None:
        kind = m.get("type")
        if kind == "credit":
            self.credit[STDERR if m.get("stream") == "stderr" else STDOUT].add(int(m["bytes"]))
        elif kind == "close_stdin":
            self.stdin_q.put_nowait(None)
        elif kind == "signal":
            await self.ex.signal(int(m["signal"]))
        elif kind == "kill":
            await self.ex.kill(None if m.get("signal") is None else int(m["signal"]))
        elif kind == "resize":
            await self.ex.resize_tty(int(m["rows"]), int(m["cols"]))
