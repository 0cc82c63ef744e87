"""``WS /v1/boxes/{id}/network/tunnel/{port}``: one ``box.network`` tunnel per WebSocket.

Server → client: ``{"type": "connected", "window": n}`` or ``{"type": "error", "error"}`` first;
then binary messages (the service's bytes, never more than the client granted),
``{"type": "eof"}`` when the service ended its stream, ``{"type": "credit", "bytes": n}``.
Client → server: binary messages (bytes for the service, at most the credit granted: beyond,
the connection is closed with 1008), ``{"type": "eof"}`` (end of its bytes),
``{"type": "credit", "bytes": n}``. Either side closing the WebSocket ends the tunnel. What the
server holds per tunnel is bounded by the windows (backends/rest/tunnel.py is the client).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from ..api.network import BoxConnection
from ..errors import BoxliteError
from ..wire import encode_error
from .state import ws_state

router = APIRouter()
log = logging.getLogger("boxlite.server")
WINDOW = 256 * 1024
"""Bytes either side may send ahead of the other's credit."""
CHUNK = 1 << 16


@router.websocket("/v1/boxes/{box_id}/network/tunnel/{port}")
async def tunnel_socket(websocket: WebSocket, box_id: str, port: str) -> None:
    await websocket.accept()
    try:
        box = await ws_state(websocket).box(box_id)
        conn = await (await box.network.tunnel(int(port) if port.isdigit() else -1)).connect()
    except WebSocketDisconnect:
        return
    except Exception as e:  # reported to the client as a typed error (InternalError if unexpected)
        if not isinstance(e, BoxliteError):
            log.exception("tunnel failed to open")
        with contextlib.suppress(Exception):
            await websocket.send_json({"type": "error", "error": encode_error(e)})
            await websocket.close()
        return
    await TunnelSession(websocket, conn).run()


class TunnelSession:
    def __init__(self, ws: WebSocket, conn: BoxConnection) -> None:
        self.ws, self.conn = ws, conn
        self.credit = WINDOW  # what the client still lets us send
        self.credit_event = asyncio.Event()
        self.held = 0  # client bytes received, not yet credited back
        self.inbound: asyncio.Queue[bytes | None] = asyncio.Queue()  # within WINDOW: `held` bounds it
        self.lock = asyncio.Lock()

    async def _send(self, msg: bytes | dict[str, Any]) -> None:
        async with self.lock:
            if isinstance(msg, bytes):
                await self.ws.send_bytes(msg)
            else:
                await self.ws.send_text(json.dumps(msg))

    async def run(self) -> None:
        """Until both sides ended their bytes, or either went away."""
        to_client = asyncio.ensure_future(self._to_client())
        to_box = asyncio.ensure_future(self._to_box())

        async def both_ended() -> None:
            await to_client
            # raises when a write to the box failed (its side is gone): the session ends rather
            # than leave a client with more to send waiting for credit that never comes
            await to_box

        tasks = [
            to_client,
            asyncio.ensure_future(both_ended()),
            asyncio.ensure_future(self._from_client()),
            to_box,
        ]
        try:
            await self._send({"type": "connected", "window": WINDOW})
            await asyncio.wait(tasks[1:3], return_when=asyncio.FIRST_COMPLETED)
        except Exception as e:
            log.debug("tunnel session ended: %s", e)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.conn.close()
            if self.ws.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await self.ws.close()

    async def _to_client(self) -> None:
        while True:
            while self.credit <= 0:
                self.credit_event.clear()
                await self.credit_event.wait()
            data = await self.conn.read(min(self.credit, CHUNK))
            if not data:
                await self._send({"type": "eof"})
                return
            self.credit -= len(data)
            await self._send(data)

    async def _to_box(self) -> None:
        """The client's bytes to the service (apart from the receiving: credit keeps flowing
        while the service does not read)."""
        while (data := await self.inbound.get()) is not None:
            await self.conn.write(data)
            self.held -= len(data)
            await self._send({"type": "credit", "bytes": len(data)})
        await self.conn.shutdown_write()

    async def _from_client(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg["type"] == "websocket.disconnect":
                raise ConnectionError("the client went away")
            data = msg.get("bytes")
            if data is not None:
                self.held += len(data)
                if self.held > WINDOW:
                    await self.ws.close(code=1008, reason="data beyond the credit granted")
                    raise ConnectionError("the client ignored its credit")
                self.inbound.put_nowait(data)
                continue
            try:
                m = json.loads(msg.get("text") or "{}")
                if m.get("type") == "credit":
                    self.credit += max(0, min(int(m["bytes"]), WINDOW))
                    self.credit_event.set()
                elif m.get("type") == "eof":
                    self.inbound.put_nowait(None)
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                log.debug("tunnel control message ignored: %s", e)
