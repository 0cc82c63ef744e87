"""What a box made for an untrusted caller may reach: a front-end that serves such callers (the
REST server's TCP clients) marks their requests' context, and every box created, cloned, forked or
imported in that context gets ``public_only`` network (no private, CGNAT or unique-local network:
the server's LAN), whatever the caller asked (docs/security.md, "REST clients and the LAN")."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace

from .config import BoxConfig

_PUBLIC_ONLY: ContextVar[bool] = ContextVar("boxlite_public_only_boxes", default=False)


@contextmanager
def public_only_boxes(on: bool = True) -> Iterator[None]:
    """Boxes made in this context (and in tasks it creates) reach public addresses only."""
    token = _PUBLIC_ONLY.set(on)
    try:
        yield
    finally:
        _PUBLIC_ONLY.reset(token)


def for_caller(config: BoxConfig) -> BoxConfig:
    """``config`` as the current caller may have it (unchanged for the library's own user)."""
    if _PUBLIC_ONLY.get() and config.network and not config.public_only:
        return replace(config, public_only=True)
    return config
