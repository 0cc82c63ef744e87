"""Bearer API-key check, applied to every HTTP request and WebSocket handshake."""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC_PATHS = frozenset({"/v1/health", "/openapi.json", "/v1/config"})  # /v1/config: BoxLite's, public


class ApiKeyMiddleware:
    """Reject requests without ``Authorization: Bearer <api_key>`` with 401 before any route runs."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._expected = f"Bearer {api_key}".encode()

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                return hmac.compare_digest(value, self._expected)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in PUBLIC_PATHS or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        error = {"type": "AuthenticationError", "message": "missing or wrong API key", "code": "unauthenticated"}
        body = json.dumps({"error": error}).encode()  # "code": what BoxLite's clients dispatch on
        headers = [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await receive()  # websocket.connect
        if "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


class LoopbackGuardMiddleware:
    """For a TCP listener without a key (``insecure_no_auth``, loopback only): refuse what a web
    browser could send there. Requests with an ``Origin`` header (cross-site pages, WebSockets
    included) and requests whose ``Host`` is not a loopback name (DNS rebinding) get 403, except
    an ``Origin`` naming the very host and port asked (the server's own dashboard page).
    Connections over the unix socket are not affected."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @staticmethod
    def _allowed(scope: Scope) -> bool:
        server = scope.get("server")
        if not server or server[1] is None:  # unix socket
            return True
        headers = dict(scope.get("headers", []))
        host = headers.get(b"host", b"").decode("latin-1").lower()
        origin = headers.get(b"origin")
        if origin is not None and origin.decode("latin-1").lower() not in (f"http://{host}", f"https://{host}"):
            return False
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name in LOOPBACK_HOSTS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": {"type": "Forbidden", "message": "browser requests are refused"}}).encode()
        headers = [(b"content-type", b"application/json")]
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 403, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await receive()
        await send({"type": "websocket.close", "code": 1008})
