"""REST client credentials and options under BoxLite's names; ``repr()`` never shows a secret."""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass, field

from ..errors import ConfigError


@dataclass(frozen=True)
class AccessToken:
    """A bearer token; ``expires_at`` in epoch seconds, None for tokens that never expire."""

    token: str = field(repr=False)
    expires_at: float | None = None

    def __repr__(self) -> str:
        return f"AccessToken(token='***', expires_at={self.expires_at!r})"


class Credential(abc.ABC):
    """Something that yields a bearer token for the REST client."""

    @abc.abstractmethod
    def get_token(self) -> AccessToken: ...


class ApiKeyCredential(Credential):
    """A long-lived API key (the server's ``--api-key``), sent as a bearer token."""

    __slots__ = ("_key",)

    def __init__(self, key: str) -> None:
        if not isinstance(key, str) or not key:
            raise ConfigError("ApiKeyCredential needs a non-empty key")
        self._key = key

    @staticmethod
    def from_env() -> ApiKeyCredential | None:
        """From ``BOXLITE_API_KEY``; None when unset or empty."""
        key = os.environ.get("BOXLITE_API_KEY")
        return ApiKeyCredential(key) if key else None

    def get_token(self) -> AccessToken:
        return AccessToken(self._key)

    @property
    def key(self) -> str:
        return self._key

    def __repr__(self) -> str:
        return "ApiKeyCredential(***)"


@dataclass
class BoxliteRestOptions:
    """Where a ``boxlite serve`` is and how to authenticate: ``Boxlite.rest(BoxliteRestOptions(...))``."""

    url: str
    credential: Credential | None = None
    path_prefix: str | None = None
    """BoxLite's multi-tenant URL segment: our server has none, so only None/"" is accepted."""

    @staticmethod
    def from_env() -> BoxliteRestOptions:
        """From ``BOXLITE_REST_URL`` (required) and ``BOXLITE_API_KEY``."""
        url = os.environ.get("BOXLITE_REST_URL")
        if not url:
            raise ConfigError("BOXLITE_REST_URL is not set")
        return BoxliteRestOptions(url, ApiKeyCredential.from_env())

    def api_key(self) -> str | None:
        """The bearer token to send (None: no authentication)."""
        return None if self.credential is None else self.credential.get_token().token


__all__ = ["AccessToken", "ApiKeyCredential", "BoxliteRestOptions", "Credential"]
