"""Client end of ``WS /v1/boxes/{id}/network/tunnel/{port}`` (server/routes_tunnel.py): a
``backends.base.TunnelStream`` for ``box.network`` over REST.

Both ways within credit: the server never sends more than this side granted (beyond: dropped,
``RpcError``), so at most the window is buffered here; this side sends only within the
server's credit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from ...aio import within
from ...client.credit import StdinWindow
from ...client.streams import ChunkStream
from ...errors import BoxliteError, NetworkError, RpcError
from ...wire import decode_error
from .transport import Transport

WINDOW = 256 * 1024
"""Bytes the server may send ahead of this side's reading."""
MAX_MESSAGE = 1 << 16
OPEN_TIMEOUT = 60.0
"""Seconds for the server to report the connection (the box's side has its own 15 s)."""


class _Incoming(ChunkStream):
    def __init__(self, tunnel: RemoteTunnel) -> None:
        super().__init__()
        self._tunnel = tunnel

    async def _consumed(self, amount: int) -> None:
        self._tunnel._credit_left += amount
        await self._tunnel._send_json({"type": "credit", "bytes": amount})


class RemoteTunnel:
    def __init__(self, ws: Any, window: int) -> None:
        self._ws = ws
        self._credit_left = WINDOW  # what the server may still send
        self._out = StdinWindow(window, MAX_MESSAGE)
        self._incoming = _Incoming(self)
        self._error: BoxliteError | None = None
        self._task = asyncio.ensure_future(self._read_loop())

    @classmethod
    async def open(cls, transport: Transport, box_id: str, port: int) -> RemoteTunnel:
        ws = await transport.websocket(f"/v1/boxes/{box_id}/network/tunnel/{port}")
        first: dict[str, Any] = {}
        try:
            first = json.loads(await within(ws.recv(), OPEN_TIMEOUT))
        except asyncio.TimeoutError:
            raise NetworkError(f"tunnel to port {port}: the server did not answer within {OPEN_TIMEOUT:g} s") from None
        except Exception as e:
            raise NetworkError(f"tunnel to port {port}: the server closed the connection: {e}") from None
        finally:
            if not isinstance(first, dict) or first.get("type") != "connected":
                await ws.close()
        if not isinstance(first, dict):
            raise RpcError("the server answered the tunnel with something else than a JSON object")
        if first.get("type") != "connected":
            raise decode_error(first)
        return cls(ws, max(0, min(int(first.get("window", 0)), WINDOW)))

    async def _send_json(self, msg: dict[str, Any]) -> None:
        if not self._task.done():
            with contextlib.suppress(Exception):
                await self._ws.send(json.dumps(msg))

    async def read(self) -> bytes | None:
        return await self._incoming.read()

    async def write(self, data: bytes) -> None:
        if not await self._out.write(data, self._ws.send, self._task.done):
            raise NetworkError("the tunnel's connection to the server is closed")

    async def close_write(self) -> None:
        if self._out.close():
            await self._send_json({"type": "eof"})

    async def wait(self) -> None:
        with contextlib.suppress(BaseException):
            await asyncio.shield(self._task)

    async def close(self) -> None:
        await self._ws.close()
        with contextlib.suppress(BaseException):
            await self._task

    async def _read_loop(self) -> None:
        try:
            async for msg in self._ws:
                if isinstance(msg, bytes):
                    if len(msg) > self._credit_left:
                        self._error = RpcError("the server sent more tunnel data than the credit granted")
                        await self._ws.close(code=1008)
                        break
                    self._credit_left -= len(msg)
                    self._incoming._feed(msg)
                    continue
                m = json.loads(msg)
                if m.get("type") == "credit":
                    self._out.grant(max(0, min(int(m.get("bytes", 0)), WINDOW)))
                elif m.get("type") == "eof":
                    self._incoming._feed(b"")
        except Exception:  # connection lost: the stream ends
            pass
        finally:
            if not self._incoming.eof:
                self._incoming._feed(b"")
            self._out.wake()


__all__ = ["RemoteTunnel"]
