"""Registry authentication: WWW-Authenticate challenges, bearer token flow, basic auth."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass

from ..errors import AuthenticationError, RegistryError
from ..httpx_lean import httpx

MAX_TOKEN_ANSWER = 1 << 20
_PARAM_RE = re.compile(r'([a-zA-Z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


@dataclass(frozen=True)
class Challenge:
    """One parsed ``WWW-Authenticate`` challenge."""

    scheme: str
    params: dict[str, str]


def parse_challenge(header: str) -> Challenge | None:
    """Parse ``Bearer realm="...",service="...",scope="..."`` or ``Basic realm=...``."""
    header = header.strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    params = {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3)) for m in _PARAM_RE.finditer(rest)
    }
    return Challenge(scheme.lower(), params)


class Authenticator:
    """Produces ``Authorization`` headers for one registry, caching tokens per scope."""

    def __init__(self, credentials: tuple[str, str] | None = None, bearer_token: str | None = None) -> None:
        self.credentials = credentials
        self.bearer_token = bearer_token
        self._tokens: dict[str, str] = {}
        self._basic = False

    def header(self, scope: str) -> dict[str, str]:
        """Headers to send proactively (a cached token, static bearer or known basic)."""
        if self.bearer_token:
            return {"Authorization": f"Bearer {self.bearer_token}"}
        if scope in self._tokens:
            return {"Authorization": f"Bearer {self._tokens[scope]}"}
        if self._basic and self.credentials:
            return {"Authorization": _basic(self.credentials)}
        return {}

    async def handle_401(self, client: httpx.AsyncClient, response: httpx.Response, scope: str) -> bool:
        """React to a 401; return True if a retry with new headers is worthwhile.

        The caller retries a request at most once after this returned True.
        """
        ch = parse_challenge(response.headers.get("www-authenticate", ""))
        if ch is None or self.bearer_token:
            return False
        if ch.scheme == "basic":
            if not self.credentials or self._basic:
                return False
            self._basic = True
            return True
        if ch.scheme != "bearer" or "realm" not in ch.params:
            return False
        self._tokens.pop(scope, None)  # expired or insufficient: fetch a fresh one
        self._tokens[scope] = await self._fetch_token(client, ch, scope)
        return True

    async def _fetch_token(self, client: httpx.AsyncClient, ch: Challenge, scope: str) -> str:
        params = {"service": ch.params["service"]} if "service" in ch.params else {}
        params["scope"] = ch.params.get("scope") or scope
        headers = {"Authorization": _basic(self.credentials)} if self.credentials else {}
        try:
            async with client.stream("GET", ch.params["realm"], params=params, headers=headers) as r:
                if r.status_code in (401, 403):
                    raise AuthenticationError(f"token server refused credentials ({r.status_code})", r.status_code)
                if r.status_code != 200:
                    raise RegistryError(f"token server answered {r.status_code}", r.status_code)
                body = bytearray()
                async for chunk in r.aiter_raw():  # raw: the client asks for no content encoding
                    body += chunk
                    if len(body) > MAX_TOKEN_ANSWER:
                        raise RegistryError(f"token server answer is larger than {MAX_TOKEN_ANSWER} bytes")
        except httpx.HTTPError as e:
            raise RegistryError(f"token server {ch.params['realm']} unreachable: {e}") from e
        try:
            doc = json.loads(body)
            token = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
        except (ValueError, RecursionError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError("token server returned no token")
        return token


def _basic(creds: tuple[str, str] | None) -> str:
    assert creds is not None
    raw = f"{creds[0]}:{creds[1]}".encode()
    return "Basic " + base64.b64encode(raw).decode()
