"""The MCP server as streamable HTTP, for ``boxlite serve --mcp`` (mounted at ``/mcp`` of the
REST app, so the same API key, loopback guard and body limits apply to it)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings

from . import limits
from .tools import RuntimeSource, build_server

PATH = "/mcp"


class McpHttp:
    """An ASGI endpoint (``app``) and the session manager's lifetime (``run()``, entered in the
    REST app's lifespan)."""

    def __init__(self, runtime: RuntimeSource) -> None:
        self.server = build_server(runtime)
        # Host/Origin checks are the REST app's (API key on TCP, LoopbackGuardMiddleware without one).
        self.server.streamable_http_app(
            streamable_http_path=PATH,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
            max_sessions=limits.MAX_SESSIONS,
            session_idle_timeout=limits.SESSION_IDLE,
        )
        self.app: Any = StreamableHTTPASGIApp(self.server.session_manager)

    def run(self) -> AbstractAsyncContextManager[None]:
        return self.server.session_manager.run()
