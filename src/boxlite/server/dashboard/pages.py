"""The dashboard's HTTP routes: its page and static assets, login/logout, two read-only helpers
the REST API lacks (a box's log tail, a directory listing) and ``/docs`` (Swagger UI).

Everything is served from files in ``static/`` (nothing from a CDN) under a strict
Content-Security-Policy: scripts only from this origin, no inline script, no ``eval``; styles
from this origin plus ``<style>`` elements carrying the page's per-response nonce (xterm.js
writes its geometry into ``<style>`` elements; the page gives them the nonce).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route, Router

from ...errors import BoxliteError, ConfigError
from ...wire import encode_error, http_status
from ..state import ServerState
from . import logs
from .sessions import Sessions, clear_cookie, cookie_name, cookie_token, csrf_ok, same_origin, set_cookie

STATIC = Path(__file__).resolve().parent / "static"
MAX_LOGIN_BODY = 4096
LOGIN_FAILURE_DELAY = 0.5
"""Seconds a wrong key waits before its 401 (slows guessing through the login form)."""
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
BASE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def csp(nonce: str | None = None, trusted_types: bool = False) -> str:
    """``trusted_types``: HTML sinks (``innerHTML``...) refuse strings (the dashboard's own code and
    xterm.js never use them; Swagger UI does, so /docs goes without)."""
    styles = "'self'" + (f" 'nonce-{nonce}'" if nonce else "")
    return (
        "default-src 'none'; script-src 'self'; "
        f"style-src {styles}; img-src 'self' data: blob:; font-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
        + ("; require-trusted-types-for 'script'; trusted-types 'none'" if trusted_types else "")
    )


def secured(response: Response, nonce: str | None = None, cache: bool = False, trusted_types: bool = False) -> Response:
    response.headers.update(BASE_HEADERS)
    response.headers["Content-Security-Policy"] = csp(nonce, trusted_types)
    response.headers["Cache-Control"] = "no-cache" if cache else "no-store"
    return response


def error(exc: BoxliteError) -> Response:
    return secured(JSONResponse({"error": encode_error(exc)}, status_code=http_status(exc)))


class Pages:
    """An ASGI app for ``/dashboard/*`` and ``/docs``."""

    def __init__(self, api_key: str | None, sessions: Sessions) -> None:
        self._key = api_key.encode() if api_key else None
        self._bearer = b"Bearer " + self._key if self._key else None
        self.sessions = sessions
        self.router = Router(
            routes=[
                Route("/dashboard", self.redirect),
                Route("/dashboard/", self.index),
                Route("/dashboard/static/{path:path}", self.static),
                Route("/dashboard/session", self.session),
                Route("/dashboard/login", self.login, methods=["POST"]),
                Route("/dashboard/logout", self.logout, methods=["POST"]),
                Route("/dashboard/api/boxes/{box}/logs", self.box_logs),
                Route("/dashboard/api/boxes/{box}/files", self.box_files),
                Route("/docs", self.docs),
            ],
            default=self.not_found,
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.router(scope, receive, send)

    @staticmethod
    async def not_found(scope: Any, receive: Any, send: Any) -> None:
        await secured(PlainTextResponse("not found", status_code=404))(scope, receive, send)

    # --- authentication -------------------------------------------------------------------
    def authorized(self, request: Request, csrf: bool) -> bool:
        """No key configured; the bearer key; or a live session (with its CSRF token when
        ``csrf``: every request but a page navigation) sent from this origin."""
        if self._bearer is None:
            return True
        headers = request.scope["headers"]
        auth = request.headers.get("authorization")
        if auth is not None:
            return hmac.compare_digest(auth.encode("latin-1"), self._bearer)
        session = self.sessions.get(cookie_token(headers))
        return session is not None and same_origin(headers, required=False) and (not csrf or csrf_ok(session, headers))

    @staticmethod
    def state(request: Request) -> ServerState:
        return request.scope["app"].state.boxlite  # type: ignore[no-any-return]

    # --- pages ----------------------------------------------------------------------------
    async def redirect(self, request: Request) -> Response:
        return secured(RedirectResponse("/dashboard/", status_code=308))

    async def index(self, request: Request) -> Response:
        return self._template("index.html", trusted_types=True)

    async def docs(self, request: Request) -> Response:
        if not self.authorized(request, csrf=False):
            page = (STATIC / "docs-login.html").read_text()
            headers = {"WWW-Authenticate": "Bearer"}
            return secured(Response(page, status_code=401, media_type="text/html", headers=headers))
        return self._template("docs.html")

    def _template(self, name: str, trusted_types: bool = False) -> Response:
        nonce = secrets.token_urlsafe(18)
        page = (STATIC / name).read_text().replace("{{nonce}}", nonce)
        return secured(Response(page, media_type="text/html"), nonce, trusted_types=trusted_types)

    async def static(self, request: Request) -> Response:
        """Files under ``static/`` only (no traversal, no directory listing, known types only)."""
        rel = request.path_params["path"]
        path = (STATIC / rel).resolve()
        ctype = CONTENT_TYPES.get(path.suffix)
        if ctype is None or not path.is_relative_to(STATIC) or not path.is_file() or path.name.endswith(".html"):
            return secured(PlainTextResponse("not found", status_code=404))
        return secured(FileResponse(path, media_type=ctype), cache=True)

    # --- session --------------------------------------------------------------------------
    async def session(self, request: Request) -> Response:
        """What the page needs to start: whether it must log in, and its CSRF token.

        A page of another origin cannot read this answer (no CORS headers), so the token stays
        with the dashboard."""
        if self._bearer is None:
            return secured(JSONResponse({"auth_required": False, "authenticated": True, "csrf": ""}))
        session = self.sessions.get(cookie_token(request.scope["headers"]))
        if session is None or not same_origin(request.scope["headers"], required=False):
            return secured(JSONResponse({"auth_required": True, "authenticated": False, "csrf": None}))
        return secured(JSONResponse({"auth_required": True, "authenticated": True, "csrf": session.csrf}))

    async def login(self, request: Request) -> Response:
        """Check the key (JSON ``{"key"}`` or a form field ``key``) and open a session."""
        headers = request.scope["headers"]
        if not same_origin(headers, required=False):
            return secured(JSONResponse({"error": {"type": "Forbidden", "message": "cross-origin login"}}, 403))
        is_form = request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
        try:
            key = await self._login_key(request, is_form)
        except ConfigError as e:
            return error(e)
        if self._key is None:
            return secured(JSONResponse({"csrf": ""}))
        if not hmac.compare_digest(key.encode(), self._key):
            await asyncio.sleep(LOGIN_FAILURE_DELAY)
            return unauthenticated("wrong API key")
        session = self.sessions.create()
        response: Response = JSONResponse({"csrf": session.csrf})
        if is_form:  # the page's script did not run: back to the page, which now has a session
            response = RedirectResponse("/dashboard/", status_code=303)
        response.headers["Set-Cookie"] = set_cookie(cookie_name(headers), session, request.url.scheme == "https")
        return secured(response)

    @staticmethod
    async def _login_key(request: Request, is_form: bool) -> str:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_LOGIN_BODY:
                raise ConfigError("login body too large")
        try:
            if is_form:
                key = (parse_qs(body.decode(), max_num_fields=4).get("key") or [""])[0]
            else:
                key = json.loads(body).get("key")
        except (ValueError, AttributeError):
            raise ConfigError('login body must be JSON {"key": ...} or a form with a key field') from None
        if not isinstance(key, str):
            raise ConfigError("key must be a string")
        return key

    async def logout(self, request: Request) -> Response:
        headers = request.scope["headers"]
        session = self.sessions.get(cookie_token(headers))
        if session is not None and csrf_ok(session, headers):
            self.sessions.drop(session.token)
        response = Response(status_code=204)
        response.headers["Set-Cookie"] = clear_cookie(cookie_name(headers))
        return secured(response)

    # --- read-only helpers over the runtime ------------------------------------------------
    async def box_logs(self, request: Request) -> Response:
        if not self.authorized(request, csrf=True):
            return unauthenticated()
        try:
            box = await self.state(request).box(request.path_params["box"])
            text = await logs.tail(self.state(request).runtime, box.id)
        except BoxliteError as e:
            return error(e)
        return secured(PlainTextResponse(text))

    async def box_files(self, request: Request) -> Response:
        """The entries of a directory in the box (read from its tar, within the MCP tool's limits)."""
        if not self.authorized(request, csrf=True):
            return unauthenticated()
        from ...mcp.boxfiles import list_files

        try:
            box = await self.state(request).box(request.path_params["box"])
            listing = await list_files(box, request.query_params.get("path") or "/")
        except BoxliteError as e:
            return error(e)
        return secured(JSONResponse(listing))


def unauthenticated(message: str = "log in first (or send Authorization: Bearer <key>)") -> Response:
    err = {"type": "AuthenticationError", "message": message, "code": "unauthenticated"}
    return secured(JSONResponse({"error": err}, status_code=401, headers={"WWW-Authenticate": "Bearer"}))
