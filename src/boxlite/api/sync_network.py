"""``box.network`` for synchronous code: the async tunnel objects driven on the facade's loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .network import BoxConnection, BoxTunnel, NetworkHandle, check_port

T = TypeVar("T")
Runner = Callable[[Awaitable[Any]], Any]


class SyncBoxConnection:
    def __init__(self, run: Runner, conn: BoxConnection) -> None:
        self._run, self._conn = run, conn

    def read(self, max_bytes: int = 1 << 16) -> bytes:
        data: bytes = self._run(self._conn.read(max_bytes))
        return data

    def write(self, data: bytes) -> int:
        n: int = self._run(self._conn.write(data))
        return n

    def shutdown_write(self) -> None:
        self._run(self._conn.shutdown_write())

    def close(self) -> None:
        self._run(self._conn.close())

    def __enter__(self) -> SyncBoxConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncBoxTunnel:
    def __init__(self, run: Runner, tunnel: BoxTunnel) -> None:
        self._run, self._tunnel = run, tunnel

    def endpoint(self) -> int:
        return self._tunnel.endpoint()

    def connect(self) -> SyncBoxConnection:
        return SyncBoxConnection(self._run, self._run(self._tunnel.connect()))

    def close(self) -> None:
        self._run(self._tunnel.close())


class SyncNetworkHandle:
    """``box.network`` of ``SyncBox``/``SyncSimpleBox``."""

    def __init__(self, run: Runner, handle: NetworkHandle) -> None:
        self._run, self._handle = run, handle

    def tunnel(self, port: int) -> SyncBoxTunnel:
        check_port(port)
        return SyncBoxTunnel(self._run, self._run(self._handle.tunnel(port)))


__all__ = ["SyncBoxConnection", "SyncBoxTunnel", "SyncNetworkHandle"]
