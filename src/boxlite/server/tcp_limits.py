"""What a REST client over TCP may make the server reach (docs/security.md): where pulls made for
it connect (images/registry_access.py: public addresses, the hosts the operator lists with
``boxlite serve --allow-registry HOST[:PORT]`` and the home's configured registries;
``--allow-any-registry`` lifts it) and what the boxes it makes reach (runtime/reach.py: public
addresses only, ``--allow-box-lan`` lifts it). Clients on the server's unix socket are the
server's own user: no limit, as the library. The limits are set in the request's context, so they
reach everything the request causes (a pull, a box created, cloned or imported, an MCP session
opened by it).
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from ..api.callers import untrusted_caller
from ..images.registry_access import RegistryAccess
from .trust import over_unix_socket


@dataclass(frozen=True)
class TcpLimits:
    """``registries``: the pull access of TCP clients (None: any address); ``box_lan``: their
    boxes may reach private networks."""

    registries: RegistryAccess | None
    box_lan: bool

    @classmethod
    def of(cls, listed: Iterable[str], any_registry: bool, box_lan: bool) -> TcpLimits:
        """ConfigError for a malformed registry entry."""
        access = RegistryAccess.of(listed)
        return cls(None if any_registry else access, box_lan)

    @property
    def none(self) -> bool:
        return self.registries is None and self.box_lan

    def applied(self) -> AbstractContextManager[None]:
        return untrusted_caller(self.registries, self.box_lan)


class TcpLimitsMiddleware:
    """Runs each HTTP and WebSocket request of a TCP client under ``limits``."""

    def __init__(self, app: ASGIApp, limits: TcpLimits, unix_socket: str | None) -> None:
        self.app, self.limits, self.unix_socket = app, limits, unix_socket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or over_unix_socket(scope, self.unix_socket):
            await self.app(scope, receive, send)
            return
        with self.limits.applied():
            await self.app(scope, receive, send)
