"""The HTTP transport of a pull made for an untrusted caller (images/registry_access.py).

Every TCP connection the pull's client opens (registry, token realm, blob redirects) passes
through :class:`VettedBackend`: a listed host connects as usual; any other name is resolved here
and only its public addresses are connected to, by address, so the address checked is the
address used. Environment proxies are not used for such pulls (the proxy, not this process,
would resolve and connect).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterable

import httpcore

from ..aio import within
from ..httpx_lean import httpx
from .registry_access import RegistryAccess, is_public

SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]


class VettedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, refusing connections ``access`` does not allow."""

    def __init__(self, access: RegistryAccess, inner: httpcore.AsyncNetworkBackend) -> None:
        self.access, self.inner = access, inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if self.access.lists(host, port):
            return await self.inner.connect_tcp(host, port, timeout, local_address, socket_options)
        addresses = await self._public_addresses(host, port, timeout)
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                failure = e
        assert failure is not None
        raise failure

    async def _public_addresses(self, host: str, port: int, timeout: float | None) -> list[str]:
        try:
            infos = await within(asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout)
        except asyncio.TimeoutError:
            raise httpcore.ConnectTimeout(f"{host}: name resolution took over {timeout} s") from None
        except OSError as e:
            raise httpcore.ConnectError(f"{host}: {e}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        public = [a for a in addresses if is_public(a)]
        if not public:
            raise self.access.refuse(host, port)
        return public

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[SocketOption] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise self.access.refuse(path, 0)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def vetted_transport(access: RegistryAccess, verify: ssl.SSLContext | bool) -> httpx.AsyncHTTPTransport:
    """httpx's transport whose connection pool connects through :class:`VettedBackend`."""
    transport = httpx.AsyncHTTPTransport(verify=verify, trust_env=False)
    pool = transport._pool
    if not isinstance(pool, httpcore.AsyncConnectionPool) or not hasattr(pool, "_network_backend"):
        raise RuntimeError("this httpx/httpcore has no pool network backend to vet connections with")
    pool._network_backend = VettedBackend(access, pool._network_backend)
    return transport
