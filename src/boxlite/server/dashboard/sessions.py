"""Browser sessions of the dashboard: a browser cannot put the API key in a WebSocket handshake,
and the key must not sit in page storage where a script could read it.

Logging in with the key creates a session: a random token in an ``HttpOnly``, ``SameSite=Strict``
cookie, plus a CSRF token the page keeps in memory and sends as ``X-Boxlite-CSRF``. The key itself
is never stored in the browser. Sessions live in the server's memory only (a restart logs
everyone out), expire after ``SESSION_TTL`` and are capped at ``MAX_SESSIONS`` (oldest dropped).
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie

COOKIE = "boxlite_session"
CSRF_HEADER = b"x-boxlite-csrf"
SESSION_TTL = 12 * 3600.0
"""Seconds a session lasts after login (not extended by use)."""
MAX_SESSIONS = 64
"""Live sessions kept; logging in past that drops the oldest."""


@dataclass(frozen=True)
class Session:
    token: str
    csrf: str
    expires: float


class Sessions:
    def __init__(self, ttl: float = SESSION_TTL, limit: int = MAX_SESSIONS) -> None:
        self._ttl, self._limit = ttl, limit
        self._by_token: dict[str, Session] = {}

    def create(self) -> Session:
        self._expire()
        while len(self._by_token) >= self._limit:
            self._by_token.pop(next(iter(self._by_token)))  # dicts keep insertion order: oldest first
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), time.monotonic() + self._ttl)
        self._by_token[session.token] = session
        return session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        session = self._by_token.get(token)
        if session is None or session.expires <= time.monotonic():
            self._by_token.pop(token, None)
            return None
        return session

    def drop(self, token: str | None) -> None:
        if token:
            self._by_token.pop(token, None)

    def _expire(self) -> None:
        now = time.monotonic()
        for token in [t for t, s in self._by_token.items() if s.expires <= now]:
            del self._by_token[token]


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def cookie_name(headers: list[tuple[bytes, bytes]]) -> str:
    """``boxlite_session_<port>``: browsers send a host's cookies to all its ports, so two
    servers on one host would otherwise overwrite each other's session."""
    host = (header(headers, b"host") or b"").decode("latin-1")
    port = host.rsplit(":", 1)[1] if ":" in host and not host.endswith("]") else ""
    return f"{COOKIE}_{port}" if port.isdigit() else COOKIE


def cookie_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The session token of the request's ``Cookie`` header (malformed cookies count as none)."""
    raw = header(headers, b"cookie")
    if raw is None or len(raw) > 8192:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw.decode("latin-1"))
    except CookieError:
        return None
    morsel = jar.get(cookie_name(headers))
    return morsel.value if morsel is not None else None


def csrf_ok(session: Session, headers: list[tuple[bytes, bytes]]) -> bool:
    sent = header(headers, CSRF_HEADER)
    return sent is not None and hmac.compare_digest(sent, session.csrf.encode())


def same_origin(headers: list[tuple[bytes, bytes]], required: bool) -> bool:
    """The request's ``Origin`` (if any; ``required``: there must be one) names the host it was
    sent to: a page of another site (or a DNS-rebound name) cannot use this browser's session."""
    origin = header(headers, b"origin")
    if origin is None:
        return not required
    host = header(headers, b"host")
    _, sep, netloc = origin.decode("latin-1").partition("://")
    return bool(sep) and host is not None and netloc.lower() == host.decode("latin-1").lower()


def set_cookie(name: str, session: Session, secure: bool) -> str:
    """``Set-Cookie`` for a new session: no ``Max-Age`` (gone when the browser closes)."""
    return f"{name}={session.token}; Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")


def clear_cookie(name: str) -> str:
    return f"{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
