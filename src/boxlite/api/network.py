"""``box.network``: BoxLite's tunnels, one TCP connection to a service port inside the box.

``await box.network.tunnel(port)`` connects (through the box's agent, so it works on both
engines and with the box's network disabled) to ``port`` on the box's own loopback and returns
a ``BoxTunnel``: ``endpoint()`` is a local file descriptor (a connected socket, borrowed: the
tunnel owns it), ``await connect()`` consumes it as a ``BoxConnection`` with ``read``/``write``/
``shutdown_write``/``close``. One tunnel, one connection; call ``tunnel()`` again for more.

The host never dials anything for a tunnel: the box's side connects to its own loopback, and
the bytes come back as an execution's output under its credit window (at most ``WINDOW`` bytes
buffered on the host per tunnel; client/tunnel.py). Over REST the same bytes travel on a
WebSocket (server/routes_tunnel.py). Deadlines and limits: docs/network.md, "Tunnels".
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, InvalidStateError, NetworkError, ResourceExhaustedError

if TYPE_CHECKING:
    from ..backends.base import TunnelStream

MAX_TUNNELS = 64
"""Open tunnels per box in this process (each is an execution in the box)."""
WINDOW = 256 * 1024
"""Box-to-host bytes in flight per tunnel (the execution's output credit)."""
CHUNK = 1 << 16

_open: dict[str, int] = {}  # box id -> open tunnels
_pumps: set[asyncio.Task[None]] = set()  # running pumps (kept referenced until they end)


def check_port(port: object) -> int:
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ConfigError("port must be an integer between 1 and 65535")
    return port


class BoxConnection:
    """A bidirectional byte stream to the service (BoxLite's ``BoxConnection``)."""

    def __init__(self, sock: socket.socket, stop: Callable[[], Any]) -> None:
        self._sock, self._stop = sock, stop

    def _live(self) -> socket.socket:
        if self._sock.fileno() < 0:
            raise InvalidStateError("connection is closed")
        return self._sock

    async def read(self, max_bytes: int = CHUNK) -> bytes:
        """Up to ``max_bytes`` bytes; ``b""`` once the service closed its side."""
        if not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ConfigError("max_bytes must be a positive integer")
        try:
            return await asyncio.get_running_loop().sock_recv(self._live(), min(max_bytes, 1 << 20))
        except ConnectionError as e:
            raise NetworkError(f"read tunnel connection: {e}") from None

    async def write(self, data: bytes) -> int:
        try:
            await asyncio.get_running_loop().sock_sendall(self._live(), data)
        except ConnectionError as e:
            raise NetworkError(f"write tunnel connection: {e}") from None
        return len(data)

    async def shutdown_write(self) -> None:
        """End of the bytes to the service (it reads EOF); reading goes on."""
        with contextlib.suppress(OSError):
            self._live().shutdown(socket.SHUT_WR)

    async def close(self) -> None:
        """Close both ways and end the box's side (whatever the service does)."""
        self._sock.close()
        self._stop()

    async def __aenter__(self) -> BoxConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class BoxTunnel:
    """One prepared connection to a service port in the box (BoxLite's ``BoxTunnel``)."""

    def __init__(self, sock: socket.socket, port: int, stop: Callable[[], Any]) -> None:
        self._sock: socket.socket | None = sock
        self.port, self._stop = port, stop

    def endpoint(self) -> int:
        """The connection's local file descriptor (borrowed: do not close it; ``connect()`` or
        ``close()`` the tunnel instead)."""
        if self._sock is None:
            raise InvalidStateError("tunnel connection has already been consumed")
        return self._sock.fileno()

    async def connect(self) -> BoxConnection:
        """Consume the tunnel: its byte stream."""
        if self._sock is None:
            raise InvalidStateError("tunnel connection has already been consumed")
        sock, self._sock = self._sock, None
        return BoxConnection(sock, self._stop)

    async def close(self) -> None:
        """Drop a tunnel that was never connected (ends the box's side)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._stop()

    def __repr__(self) -> str:
        return f"BoxTunnel(port={self.port})"


class NetworkHandle:
    """``box.network`` (BoxLite's ``NetworkHandle``)."""

    def __init__(self, box: Any) -> None:
        self._box = box

    async def tunnel(self, port: int) -> BoxTunnel:
        """Connect to ``port`` on the box's loopback; raises ``NetworkError`` when nothing
        accepts there within the deadline."""
        port = check_port(port)
        box = getattr(self._box, "box", self._box)  # SimpleBox or Box
        if _open.get(box.id, 0) >= MAX_TUNNELS:
            raise ResourceExhaustedError(f"box {box.id} has {MAX_TUNNELS} open tunnels (the limit)")
        _open[box.id] = _open.get(box.id, 0) + 1
        try:
            await box._backend.ready(box.id)
            stream = await box._backend.tunnel(box.id, port, WINDOW)
        except BaseException:
            _release(box.id)
            raise
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        theirs.setblocking(False)
        task = _keep(_pump(stream, ours))
        task.add_done_callback(lambda _: _ended(stream, ours, box.id))
        return BoxTunnel(theirs, port, task.cancel)


def _keep(coro: Any) -> asyncio.Task[None]:
    task = asyncio.ensure_future(coro)
    _pumps.add(task)
    task.add_done_callback(_pumps.discard)
    return task


def _release(box_id: str) -> None:
    _open[box_id] = _open.get(box_id, 1) - 1
    if _open[box_id] <= 0:
        _open.pop(box_id, None)


def _ended(stream: TunnelStream, sock: socket.socket, box_id: str) -> None:
    """A pump ended (also: cancelled before it ran): free its slot, end the box's side."""
    sock.close()
    _release(box_id)
    _keep(stream.close())


async def _pump(stream: TunnelStream, sock: socket.socket) -> None:
    """Bytes between the caller's end of the socket pair and the box's side."""
    loop = asyncio.get_running_loop()

    async def to_caller() -> None:
        while (chunk := await stream.read()) is not None:
            await loop.sock_sendall(sock, chunk)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)

    async def to_box() -> None:
        while data := await loop.sock_recv(sock, CHUNK):
            await stream.write(data)
        await stream.close_write()

    tasks = [asyncio.ensure_future(t()) for t in (to_caller, to_box)]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        if not any(t.exception() for t in done if not t.cancelled()):
            await stream.wait()
    except Exception:  # the box's side died
        pass
    finally:  # ended, failed (the caller went away) or closed by the caller (then _ended closes it)
        for t in tasks:
            t.cancel()


__all__ = ["BoxConnection", "BoxTunnel", "NetworkHandle", "check_port"]
