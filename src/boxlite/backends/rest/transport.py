"""HTTP and WebSocket plumbing of the REST backend: URLs, auth header, typed errors."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from urllib.parse import quote, urlsplit

from ...aio import within
from ...errors import (
    ConfigError,
    NetworkError,
    ResourceExhaustedError,
    StoppedError,
    TimeoutError,
    UnauthorizedError,
)
from ...httpx_lean import httpx
from ...wire import MAX_FRAME, decode_error

MAX_ANSWER = 64 << 20
"""Largest JSON answer read (a listing of thousands of boxes fits): a hostile or broken server's
endless body ends in ResourceExhaustedError, not in this process's memory."""
MAX_ERROR_ANSWER = 1 << 20
"""Largest error body read (also of streamed routes)."""
MAX_LINE = 1 << 20
"""Longest line of a streamed NDJSON answer (pull progress)."""
QUICK_DEADLINE = 60.0
"""Seconds a read-only call (listings, info, whoami, metrics) may take in all: the server may be
hostile or wedged, and these calls never wait for box work."""


def _raise_for(status: int, body: Any) -> None:
    if status == 401:
        msg = body.get("error", {}).get("message") if isinstance(body, dict) else None
        raise UnauthorizedError(msg or "missing or wrong API key")
    raise decode_error(body, status)


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _too_long(url: str, what: str, limit: int) -> ResourceExhaustedError:
    return ResourceExhaustedError(f"{url} sent {what} longer than {limit} bytes; stopped reading")


async def read_capped(resp: httpx.Response, limit: int, url: str) -> bytes:
    """The (decompressed) body, refused past ``limit`` bytes."""
    buf = bytearray()
    async for chunk in resp.aiter_bytes():
        buf += chunk
        if len(buf) > limit:
            raise _too_long(url, "an answer", limit)
    return bytes(buf)


async def iter_lines_capped(resp: httpx.Response, url: str, limit: int = MAX_LINE) -> AsyncIterator[bytes]:
    """The body's lines, each at most ``limit`` bytes (httpx's own reader buffers a line without end)."""
    pending = bytearray()
    async for chunk in resp.aiter_bytes():
        pending += chunk
        *lines, rest = pending.split(b"\n")
        for line in lines:
            yield bytes(line)
        if len(rest) > limit:
            raise _too_long(url, "a line", limit)
        pending = bytearray(rest)
    if pending:
        yield bytes(pending)


class Transport:
    """Talks to one server: ``unix:///path/to.sock`` or ``http(s)://host:port``."""

    def __init__(self, url: str, api_key: str | None = None) -> None:
        url = str(url)
        parts = urlsplit(url)
        self.url = url
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        if parts.scheme == "unix":
            self.uds: str | None = parts.path
            self.base_url = "http://boxlite"
            self.ws_base = "ws://boxlite"
        elif parts.scheme in ("http", "https"):
            self.uds = None
            self.base_url = url.rstrip("/")
            self.ws_base = ("wss" if parts.scheme == "https" else "ws") + self.base_url[len(parts.scheme) :]
        else:
            raise ConfigError(f"server URL must be unix:///path or http(s)://host:port, got {url!r}")
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sync: httpx.Client | None = None
        self.closed = False

    def _kwargs(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "headers": self.headers, "timeout": httpx.Timeout(None, connect=10.0)}

    def client(self) -> httpx.AsyncClient:
        """The connection pool of the running event loop (a new loop gets a new pool)."""
        if self.closed:
            raise StoppedError("this runtime was shut down")
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=self.uds), **self._kwargs())
            self._loop = loop
        return self._client

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        """The connection's failures as typed errors naming the server (httpx's own escaped the
        SDK: a CLI printed them as internal errors)."""
        try:
            yield
        except httpx.TimeoutException as e:
            raise TimeoutError(f"{self.url} did not answer in time ({type(e).__name__})") from None
        except httpx.TransportError as e:
            raise NetworkError(f"cannot reach {self.url}: {e or type(e).__name__}") from None

    async def request(
        self, method: str, path: str, *, deadline: float | None = None, limit: int = MAX_ANSWER, **kwargs: Any
    ) -> Any:
        """Send a request; returns the decoded JSON body (None for 204); raises typed errors.

        ``deadline`` bounds the whole exchange (None: calls that wait for box work, such as a
        create that pulls an image); ``limit`` the answer's size."""

        async def exchange() -> tuple[int, bytes]:
            async with self.client().stream(method, path, **kwargs) as resp:
                cap = limit if resp.status_code < 400 else MAX_ERROR_ANSWER
                return resp.status_code, await read_capped(resp, cap, self.url)

        with self._reaching():
            try:
                status, raw = await within(exchange(), deadline)
            except asyncio.TimeoutError:
                raise TimeoutError(f"{self.url} did not answer {method} {path} within {deadline:g} s") from None
        if status >= 400:
            _raise_for(status, _decode(raw))
        return None if status == 204 else _decode(raw)

    def request_sync(
        self, method: str, path: str, *, deadline: float = QUICK_DEADLINE, limit: int = MAX_ANSWER, **kwargs: Any
    ) -> Any:
        """Blocking variant, for the synchronous ``Box.info()`` (a read: always under a deadline)."""
        if self.closed:
            raise StoppedError("this runtime was shut down")
        if self._sync is None:
            self._sync = httpx.Client(transport=httpx.HTTPTransport(uds=self.uds), **self._kwargs())
        end = time.monotonic() + deadline
        timeout = httpx.Timeout(deadline, connect=10.0)
        with self._reaching(), self._sync.stream(method, path, timeout=timeout, **kwargs) as resp:
            cap = limit if resp.status_code < 400 else MAX_ERROR_ANSWER
            buf = bytearray()
            for chunk in resp.iter_bytes():
                buf += chunk
                if len(buf) > cap:
                    raise _too_long(self.url, "an answer", cap)
                if time.monotonic() > end:
                    raise TimeoutError(f"{self.url} did not answer {method} {path} within {deadline:g} s")
            status = resp.status_code
        if status >= 400:
            _raise_for(status, _decode(bytes(buf)))
        return None if status == 204 else _decode(bytes(buf))

    @asynccontextmanager
    async def stream(self, method: str, path: str, **kwargs: Any) -> AsyncIterator[httpx.Response]:
        with self._reaching():  # also while the caller reads the body
            async with self.client().stream(method, path, **kwargs) as resp:
                if resp.status_code >= 400:
                    _raise_for(resp.status_code, _decode(await read_capped(resp, MAX_ERROR_ANSWER, self.url)))
                yield resp

    async def websocket(self, path: str) -> Any:
        """An open ``websockets`` client connection to ``path``."""
        from websockets.asyncio.client import connect, unix_connect
        from websockets.exceptions import InvalidStatus

        if self.closed:
            raise StoppedError("this runtime was shut down")
        kwargs: dict[str, Any] = {
            "additional_headers": self.headers, "max_size": 2 * MAX_FRAME + 1024, "compression": None,
            "ping_interval": None, "proxy": None,
            # never stop reading (pongs must flow): the server's credit bounds what can queue up
            "max_queue": None,
        }  # fmt: skip
        uri = self.ws_base + quote(path)
        try:
            if self.uds is not None:
                return await unix_connect(self.uds, uri, **kwargs)
            return await connect(uri, **kwargs)
        except InvalidStatus as e:
            body: Any = e.response.body or b""
            try:
                import json

                body = json.loads(body)
            except ValueError:
                pass
            _raise_for(e.response.status_code, body)
            raise  # unreachable

    async def aclose(self) -> None:
        self.closed = True
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        if self._sync is not None:
            self._sync.close()
