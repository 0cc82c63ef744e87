"""Routes ``/dashboard/*`` and ``/docs`` to the dashboard's pages, and lets a logged-in browser
use the REST API: its session cookie becomes the bearer key for the request, only when the
request proves it comes from the dashboard's own origin (CSRF header for HTTP; same-origin
``Origin`` for the WebSocket handshake, which cannot carry custom headers)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .pages import Pages
from .sessions import Sessions, cookie_token, csrf_ok, header, same_origin

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PREFIXES = ("/dashboard", "/docs")


def is_page(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in PREFIXES)


class DashboardMiddleware:
    """Outside the API-key check: it serves the pages itself and adds the key to the API
    requests of a valid session (which the key check then accepts)."""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self._bearer = f"Bearer {api_key}".encode() if api_key else None
        self.sessions = Sessions()
        self.pages = Pages(api_key, self.sessions)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_page(scope["path"]):
            await self.pages(scope, receive, send)
            return
        if scope["type"] in ("http", "websocket") and self._bearer is not None:
            scope = self._with_session_key(scope)
        await self.app(scope, receive, send)

    def _with_session_key(self, scope: Scope) -> Scope:
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers", []))
        if header(headers, b"authorization") is not None:
            return scope  # a client with its own key (or a wrong one): the key check decides
        session = self.sessions.get(cookie_token(headers))
        if session is None:
            return scope
        if scope["type"] == "websocket":
            ok = same_origin(headers, required=True)
        else:
            ok = csrf_ok(session, headers) and same_origin(headers, required=False)
        if not ok:
            return scope
        assert self._bearer is not None
        return {**scope, "headers": [*headers, (b"authorization", self._bearer)]}
