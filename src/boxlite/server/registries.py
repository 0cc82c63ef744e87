"""Where pulls made for a REST client may connect (images/registry_access.py says why).

Over TCP: public addresses, the hosts the operator lists (``boxlite serve --allow-registry
HOST[:PORT]``) and the home's configured registries; ``--allow-any-registry`` lifts the limit
(BoxLite's behaviour). Clients on the server's unix socket pull from anywhere, as the library would.
The access is set in the request's context, so it reaches every pull the request causes (an image
pull, a box created from an image, an imported archive naming one, an MCP session opened by it).
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from ..images.registry_access import RegistryAccess, restricted
from .trust import over_unix_socket


def tcp_access(listed: Iterable[str], any_registry: bool) -> RegistryAccess | None:
    """The access of TCP clients (None: unrestricted); ConfigError for a malformed entry."""
    access = RegistryAccess.of(listed)
    return None if any_registry else access


class RegistryAccessMiddleware:
    """Runs each HTTP and WebSocket request of a TCP client under ``access``."""

    def __init__(self, app: ASGIApp, access: RegistryAccess, unix_socket: str | None) -> None:
        self.app, self.access, self.unix_socket = app, access, unix_socket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or over_unix_socket(scope, self.unix_socket):
            await self.app(scope, receive, send)
            return
        with restricted(self.access):
            await self.app(scope, receive, send)
