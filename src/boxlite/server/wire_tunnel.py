"""BoxLite's wire tunnels (``prepareTunnel``): one small TCP listener per (box, port), owned by the
server process and bound to the address the API request arrived on, whose accepted connections
each become one ``box.network`` tunnel.

uvicorn has no HTTP ``CONNECT``, so the listener speaks just enough HTTP/1.1 itself: it reads one
request head (at most ``MAX_HEAD`` bytes within ``HEAD_DEADLINE`` s), checks the tunnel's token and
then either answers a ``CONNECT`` with ``200 Connection Established`` and splices the raw stream to
the in-box service, or forwards any other request (its head, credentials removed, and the rest of
the stream unparsed) so that plain HTTP reaches the service directly.

The URI is a capability: ``http://boxlite:<token>@<host>:<port>``, a random token per tunnel,
always required (also without an API key: the port is reachable by every local user). Clients
send it as HTTP Basic credentials (``Authorization``, ``Proxy-Authorization``) or, as a client
taking the URI's authority for ``CONNECT`` does, as userinfo in the request target or ``Host``.
A missing or wrong token gets 407 (``CONNECT``) or 401 and no connection to the box. Listeners
close when their box stops or goes away (polled every ``WATCH_INTERVAL`` s) and at server exit.
Limits: docs/security.md; flow control is the tunnel's credit (api/network.py).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import ipaddress
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from ..aio import within
from ..api.box import Box
from ..api.network import BoxConnection, check_port
from ..api.runtime import Boxlite
from ..errors import BoxliteError, InvalidStateError, NetworkError, ResourceExhaustedError

log = logging.getLogger("boxlite.server")

MAX_HEAD = 8 * 1024
"""Bytes of a request head (request line and headers)."""
HEAD_DEADLINE = 10.0
"""Seconds for a client to send its request head."""
MAX_CONNECTIONS = 64
"""Concurrent connections per tunnel (also those still sending their head)."""
MAX_SERVER_CONNECTIONS = 256
"""Concurrent connections over all tunnels of the server."""
MAX_PER_BOX = 16
"""Tunnels (distinct ports, or the same port on distinct server addresses) per box."""
MAX_TUNNELS = 128
"""Tunnels per server."""
WATCH_INTERVAL = 1.0
"""Seconds between checks that a tunnel's box still runs."""
USER = "boxlite"
"""The user name of the URI's credentials (the token is the password)."""
LINGER = 2.0
"""Seconds a refused client's further bytes are read and dropped (so that it reads the answer)."""
LINGER_BYTES = 1 << 16
CHUNK = 1 << 16
LIVE = ("running", "paused")


class HeadError(Exception):
    """A request head that is refused: ``status`` and ``reason`` are the answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass
class Head:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    rest: bytes = b""
    """Bytes the client sent after the head (already read)."""

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name]


async def read_head(reader: asyncio.StreamReader) -> Head | None:
    """One request head (None: the client left before sending one); ``HeadError`` if refused."""
    buf = b""
    while (end := buf.find(b"\r\n\r\n")) < 0:
        if len(buf) > MAX_HEAD:
            raise HeadError(431, "Request Header Fields Too Large")
        chunk = await reader.read(4096)
        if not chunk:
            return None
        buf += chunk
    if end + 4 > MAX_HEAD:
        raise HeadError(431, "Request Header Fields Too Large")
    return parse_head(buf[:end], buf[end + 4 :])


def parse_head(raw: bytes, rest: bytes) -> Head:
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[2].startswith("HTTP/1.") or not parts[1]:
        raise HeadError(400, "Bad Request")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise HeadError(400, "Bad Request")
        headers.append((name, value.strip()))
    return Head(parts[0].upper(), parts[1], parts[2], headers, rest)


def _basic(value: str) -> str | None:
    scheme, _, encoded = value.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(encoded.strip(), validate=True).decode("latin-1")
    except (binascii.Error, ValueError):
        return None


def _userinfo(authority: str) -> str | None:
    """``user:pass`` of ``user:pass@host:port`` (percent-decoded), if any."""
    info, at, _ = authority.rpartition("@")
    return unquote(info) if at else None


def _strip_userinfo(authority: str) -> str:
    return authority.rpartition("@")[2]


def credentials(head: Head) -> list[str]:
    """Every ``user:password`` the client offered, wherever it put them."""
    offered = [c for name in ("proxy-authorization", "authorization") for v in head.header(name) if (c := _basic(v))]
    target = head.target
    if "://" in target:
        target = urlsplit(target).netloc
    for authority in (target, *head.header("host")):
        if (info := _userinfo(authority)) is not None:
            offered.append(info)
    return offered


def forwarded_head(head: Head, secret: str) -> bytes:
    """The head for the service: our credentials removed, the target in origin form."""
    target = head.target
    if "://" in target:
        parts = urlsplit(target)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"{head.method} {target} {head.version}"]
    for name, value in head.headers:
        low = name.lower()
        if low == "proxy-authorization" or (low == "authorization" and _basic(value) == secret):
            continue
        if low == "host":
            value = _strip_userinfo(value)
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def reply(status: int, reason: str, extra: str = "") -> bytes:
    body = f"{status} {reason}\n".encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\n{extra}Content-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def _refusal(exc: BaseException) -> bytes:
    """What a client hears when the box's side could not be reached (no internals)."""
    if isinstance(exc, NetworkError):
        return reply(502, "Bad Gateway")
    return reply(503, "Service Unavailable")


@dataclass
class WireTunnel:
    """The listener of one (box, port)."""

    box: Box
    port: int
    host: str
    registry: WireTunnels
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    server: asyncio.Server | None = None
    conns: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def secret(self) -> str:
        return f"{USER}:{self.token}"

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None
        sockname = self.server.sockets[0].getsockname()
        return sockname[0], sockname[1]

    @property
    def uri(self) -> str:
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        return f"http://{USER}:{self.token}@{shown}:{port}"

    async def open(self) -> None:
        self.server = await asyncio.start_server(self._serve, self.host, 0, backlog=MAX_CONNECTIONS)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.conns):
            task.cancel()
        await asyncio.gather(*self.conns, return_exceptions=True)

    def _authorized(self, head: Head) -> bool:
        want = self.secret.encode("latin-1")
        return any(hmac.compare_digest(c.encode("latin-1", "replace"), want) for c in credentials(head))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            if len(self.conns) >= MAX_CONNECTIONS or self.registry.connections >= MAX_SERVER_CONNECTIONS:
                writer.write(reply(503, "Service Unavailable"))
                return
            self.conns.add(task)
            self.registry.connections += 1
            try:
                await self._handle(reader, writer)
            finally:
                self.conns.discard(task)
                self.registry.connections -= 1
        except (ConnectionError, OSError, asyncio.IncompleteReadError) as e:
            log.debug("wire tunnel connection ended: %s", e)
        finally:
            with contextlib.suppress(Exception):
                writer.close()
                await within(writer.wait_closed(), 5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await within(read_head(reader), HEAD_DEADLINE)
        except HeadError as e:
            return await refuse(reader, writer, reply(e.status, e.reason))
        except asyncio.TimeoutError:
            return await refuse(reader, writer, reply(408, "Request Timeout"))
        if head is None:
            return None
        connect = head.method == "CONNECT"
        if not self._authorized(head):
            challenge = 'Basic realm="boxlite tunnel"\r\n'
            if connect:
                answer = reply(407, "Proxy Authentication Required", f"Proxy-Authenticate: {challenge}")
            else:
                answer = reply(401, "Unauthorized", f"WWW-Authenticate: {challenge}")
            return await refuse(reader, writer, answer)
        try:
            conn = await (await self.box.network.tunnel(self.port)).connect()
        except BoxliteError as e:
            log.debug("wire tunnel to %s:%d failed: %s", self.box.id, self.port, e)
            return await refuse(reader, writer, _refusal(e))
        try:
            if connect:
                writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                first = head.rest
            else:
                first = forwarded_head(head, self.secret) + head.rest
            await splice(reader, writer, conn, first)
        finally:
            await conn.close()


async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: bytes) -> None:
    """Send ``answer`` and end the connection so that the client reads it: what it still sends is
    read and dropped for a moment (at most ``LINGER_BYTES``), not answered with a reset."""

    async def drop() -> None:
        dropped = 0
        while dropped < LINGER_BYTES and (chunk := await reader.read(CHUNK)):
            dropped += len(chunk)

    writer.write(answer)
    with contextlib.suppress(Exception):
        if writer.can_write_eof():
            writer.write_eof()
        await writer.drain()
        await within(drop(), LINGER)


async def splice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: BoxConnection, first: bytes) -> None:
    """Bytes both ways until both sides ended theirs, or either failed. Each direction holds at
    most a chunk: the box's side is under the tunnel's credit, the client's under TCP's."""

    async def to_box() -> None:
        if first:
            await conn.write(first)
        while data := await reader.read(CHUNK):
            await conn.write(data)
        await conn.shutdown_write()

    async def to_client() -> None:
        while data := await conn.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    tasks = [asyncio.ensure_future(to_box()), asyncio.ensure_future(to_client())]
    try:
        pending: set[asyncio.Future[None]] = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(not t.cancelled() and t.exception() for t in done):
                break
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class WireTunnels:
    """The server's tunnels; a watcher closes those whose box stopped."""

    def __init__(self, runtime: Boxlite) -> None:
        self.runtime = runtime
        self.tunnels: dict[tuple[str, int, str], WireTunnel] = {}
        """By (box id, port, listening address)."""
        self.connections = 0
        self._lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None

    async def prepare(self, box: Box, port: int, host: str) -> str:
        """The URI of ``box``'s tunnel to ``port`` on ``host`` (the same one on every call while the
        box runs: a request arriving on another address of the server gets a listener there)."""
        port = check_port(port)
        if box.info().status != "running":
            raise InvalidStateError(f"box {box.id} is not running")
        async with self._lock:
            found = self.tunnels.get((box.id, port, host))
            if found is not None:
                return found.uri
            if sum(1 for key in self.tunnels if key[0] == box.id) >= MAX_PER_BOX:
                raise ResourceExhaustedError(f"box {box.id} has {MAX_PER_BOX} tunnels (the limit)")
            if len(self.tunnels) >= MAX_TUNNELS:
                raise ResourceExhaustedError(f"the server has {MAX_TUNNELS} tunnels (the limit)")
            tunnel = WireTunnel(box, port, host, self)
            await tunnel.open()
            self.tunnels[(box.id, port, host)] = tunnel
            if self._watcher is None or self._watcher.done():
                self._watcher = asyncio.ensure_future(self._watch())
            return tunnel.uri

    async def close_box(self, box_id: str) -> None:
        async with self._lock:
            gone = [self.tunnels.pop(key) for key in list(self.tunnels) if key[0] == box_id]
        await asyncio.gather(*(t.close() for t in gone), return_exceptions=True)

    async def _watch(self) -> None:
        while self.tunnels:
            await asyncio.sleep(WATCH_INTERVAL)
            for box_id in {key[0] for key in self.tunnels}:
                try:
                    info = await self.runtime.get_info(box_id)
                except Exception as e:  # the runtime is shutting down: close() follows
                    log.debug("wire tunnel watch: %s", e)
                    continue
                if info is None or info.status not in LIVE:
                    await self.close_box(box_id)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(BaseException):
                await self._watcher
        async with self._lock:
            gone, self.tunnels = list(self.tunnels.values()), {}
        await asyncio.gather(*(t.close() for t in gone), return_exceptions=True)


def tunnels(app: Any) -> WireTunnels:
    """The app's registry (created on first use)."""
    reg = getattr(app.state, "boxlite_wire_tunnels", None)
    if reg is None:
        reg = app.state.boxlite_wire_tunnels = WireTunnels(app.state.boxlite.runtime)
    return reg  # type: ignore[no-any-return]


async def close_all(app: Any) -> None:
    """Close every listener (server exit)."""
    reg = getattr(app.state, "boxlite_wire_tunnels", None)
    if reg is not None:
        await reg.close()


def bind_host(server: tuple[str, int | None] | None) -> str:
    """Where a tunnel listens: the address the API request arrived on (a unix socket: loopback)."""
    host = server[0] if server else ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return "127.0.0.1"
    return host
