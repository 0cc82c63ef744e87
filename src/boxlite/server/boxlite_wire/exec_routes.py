"""Routes of BoxLite's exec model: ``POST .../exec``, ``executions/{id}`` (status, kill), its
``signal``/``resize`` and the ``attach`` WebSocket.

Attach frames: client binary → stdin; client text ``{"type": "resize", "cols", "rows"}``,
``{"type": "signal", "sig"}``, ``{"type": "stdin_eof"}``. Server binary ``0x01``/``0x02`` + output;
server text ``{"type": "exit", "exit_code"}`` (then close 1000) or ``{"type": "error", "message"}``.
One client at a time (a second one gets 409 before the upgrade); a closed socket leaves the command
running, its unsent output held (bounded: executions.py) for the next attach.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from fastapi import APIRouter, Depends, Request, Response, WebSocket, status
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketState

from ...errors import BoxliteError, ConfigError, InvalidStateError
from ...wire import STDERR, STDOUT
from ..state import ServerState, get_state, ws_state
from .errors import WireRoute, wire_error
from .executions import SIGNALS, Executions, WireExec
from .models import WireExecRequest, WireResize, WireSignal
from .responses import WireExecResponse, WireExecutionInfo, errors

router = APIRouter(route_class=WireRoute, tags=["BoxLite wire"])
log = logging.getLogger("boxlite.server")
MAX_CONTROL = 4096
"""Bytes of a text (control) frame on the attach socket."""


def executions(app: Any) -> Executions:
    reg = getattr(app.state, "boxlite_wire_execs", None)
    if reg is None:
        reg = app.state.boxlite_wire_execs = Executions()
    return reg  # type: ignore[no-any-return]


async def _find(st: ServerState, app: Any, box_id: str, exec_id: str) -> WireExec:
    box = await st.box(box_id)
    return executions(app).get(box.id, exec_id)


@router.post(
    "/boxes/{box_id}/exec", status_code=status.HTTP_201_CREATED, operation_id="startExecution",
    response_model=WireExecResponse, responses=errors(400, 404, 409, 413, 504),
)  # fmt: skip
async def start_execution(
    box_id: str, req: WireExecRequest, request: Request, response: Response, st: ServerState = Depends(get_state)
) -> Any:
    """Start the command (the box starts if it is not running) and answer its execution id."""
    box = await st.box(box_id)
    execution = await box.exec(
        req.command, req.args, env=req.env, tty=req.tty, timeout_secs=req.timeout_seconds, cwd=req.working_dir,
    )  # fmt: skip
    try:
        rec = executions(request.app).add(box.id, execution, req.tty)
    except BoxliteError:
        with contextlib.suppress(BoxliteError):
            await execution.kill()
        raise
    base = request.url.path.rsplit("/exec", 1)[0]
    response.headers["Location"] = f"{base}/executions/{rec.id}"
    return {"execution_id": rec.id}


@router.get(
    "/boxes/{box_id}/executions/{exec_id}", operation_id="getExecution", response_model=WireExecutionInfo,
    responses=errors(404),
)  # fmt: skip
async def get_execution(box_id: str, exec_id: str, request: Request, st: ServerState = Depends(get_state)) -> Any:
    return (await _find(st, request.app, box_id, exec_id)).info()


@router.delete(
    "/boxes/{box_id}/executions/{exec_id}", status_code=204, operation_id="killExecution", responses=errors(404)
)
async def kill_execution(box_id: str, exec_id: str, request: Request, st: ServerState = Depends(get_state)) -> Response:
    """SIGKILL and forget the execution (an attached client gets its exit frame)."""
    rec = await _find(st, request.app, box_id, exec_id)
    executions(request.app).pop(rec.id)
    await rec.kill()
    return Response(status_code=204)


@router.post(
    "/boxes/{box_id}/executions/{exec_id}/signal", status_code=204, operation_id="signalExecution",
    responses=errors(400, 404, 409),
)  # fmt: skip
async def signal_execution(
    box_id: str, exec_id: str, req: WireSignal, request: Request, st: ServerState = Depends(get_state)
) -> Response:
    rec = await _find(st, request.app, box_id, exec_id)
    _check_signal(req.signal)
    if not rec.running:
        raise InvalidStateError("execution is not running")
    await rec.ex.signal(req.signal)
    return Response(status_code=204)


def _check_signal(sig: int) -> None:
    if sig not in SIGNALS:
        hint = " (kill with DELETE .../executions/{id})" if sig == 9 else ""
        raise ConfigError(f"signal {sig} is not allowed{hint}; allowed: {sorted(SIGNALS)}")


@router.post(
    "/boxes/{box_id}/executions/{exec_id}/resize", status_code=204, operation_id="resizeExecution",
    responses=errors(400, 404, 409),
)  # fmt: skip
async def resize_execution(
    box_id: str, exec_id: str, req: WireResize, request: Request, st: ServerState = Depends(get_state)
) -> Response:
    rec = await _find(st, request.app, box_id, exec_id)
    if not rec.running or not rec.tty:
        raise InvalidStateError("execution is not a running TTY execution")
    await rec.ex.resize_tty(req.rows, req.cols)
    return Response(status_code=204)


ATTACH_PROTOCOL = """Upgrade to a WebSocket carrying the execution's stdio (one client at a time).

Client → server: binary frames are stdin; text frames (JSON, ≤ 4 KiB) `{"type": "resize", "cols", "rows"}`,
`{"type": "signal", "sig"}` (HUP INT QUIT ABRT USR1 USR2 TERM WINCH), `{"type": "stdin_eof"}`.
Server → client: binary frames `0x01` (stdout) or `0x02` (stderr) + data; text `{"type": "exit", "exit_code"}`
after all output, then close 1000; `{"type": "error", "message"}` for a refused control frame (the socket
stays open). Closing the socket leaves the command running; a later attach gets the output not yet sent.
A plain GET without the upgrade is answered 400."""


@router.get(
    "/boxes/{box_id}/executions/{exec_id}/attach", status_code=101, operation_id="attachExecution",
    description=ATTACH_PROTOCOL, responses={101: {"description": "WebSocket upgrade"}, **errors(400, 404, 409)},
)  # fmt: skip
async def attach_without_upgrade(
    box_id: str, exec_id: str, request: Request, st: ServerState = Depends(get_state)
) -> Response:
    """What a client that did not ask for the upgrade gets (after the 404 of an unknown execution)."""
    await _find(st, request.app, box_id, exec_id)
    raise ConfigError("attach is a WebSocket: send the GET with 'Upgrade: websocket'")


@router.websocket("/boxes/{box_id}/executions/{exec_id}/attach")
async def attach_execution(websocket: WebSocket, box_id: str, exec_id: str) -> None:
    try:
        rec = await _find(ws_state(websocket), websocket.app, box_id, exec_id)
        if rec.attached:
            raise InvalidStateError("another client is attached to this execution")
    except BoxliteError as e:
        code, body = wire_error(e)
        await websocket.send_denial_response(JSONResponse(body, status_code=code))
        return
    rec.attach()
    try:
        await websocket.accept()
        await AttachSession(websocket, rec).run()
    finally:
        rec.detach()
        if rec.id not in executions(websocket.app)._all:
            rec.discard()


class AttachSession:
    """Pumps one execution's output to one socket and the socket's input to the execution."""

    def __init__(self, ws: WebSocket, rec: WireExec) -> None:
        self.ws, self.rec = ws, rec
        self._lock = asyncio.Lock()

    async def _send(self, msg: bytes | dict[str, Any]) -> None:
        async with self._lock:
            if isinstance(msg, bytes):
                await self.ws.send_bytes(msg)
            else:
                await self.ws.send_text(json.dumps(msg))

    async def run(self) -> None:
        tasks = [asyncio.ensure_future(self._output()), asyncio.ensure_future(self._input())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.ws.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await self.ws.close()

    async def _pump(self, kind: int) -> None:
        while (chunk := await self.rec.next_chunk(kind)) is not None:
            await self._send(bytes([kind]) + chunk)
            self.rec.sent(kind)

    async def _output(self) -> None:
        """All output, then the exit frame, then a normal close."""
        await asyncio.gather(self._pump(STDOUT), self._pump(STDERR))
        await asyncio.shield(self.rec.waiter)
        st = self.rec.status
        await self._send({"type": "exit", "exit_code": -1 if st is None else st.exit_code})
        await self.ws.close(code=1000)

    async def _input(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            data = msg.get("bytes")
            if data is not None:
                if data and not self.rec.stdin_closed:
                    try:
                        await self.rec.stdin.send_input(data)
                    except BoxliteError as e:
                        await self._send({"type": "error", "message": f"stdin: {e}"})
                continue
            try:
                await self._control(msg.get("text") or "")
            except (BoxliteError, ValueError, TypeError, KeyError) as e:
                await self._send({"type": "error", "message": str(e)[:500]})

    async def _control(self, text: str) -> None:
        if len(text) > MAX_CONTROL:
            raise ConfigError(f"control frame longer than {MAX_CONTROL} bytes")
        m = json.loads(text)
        if not isinstance(m, dict):
            raise ConfigError("control frame must be a JSON object")
        kind = m.get("type")
        if kind == "stdin_eof":
            await self.rec.close_stdin()
        elif kind == "signal":
            sig = m.get("sig")
            if not isinstance(sig, int) or isinstance(sig, bool):
                raise ConfigError("signal: 'sig' must be an integer")
            _check_signal(sig)
            await self.rec.ex.signal(sig)
        elif kind == "resize":
            size = WireResize.model_validate({"cols": m.get("cols"), "rows": m.get("rows")})
            if self.rec.tty:
                await self.rec.ex.resize_tty(size.rows, size.cols)
        else:
            raise ConfigError(f"unknown control message type {str(kind)[:40]!r}")
