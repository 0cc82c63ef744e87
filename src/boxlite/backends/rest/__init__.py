"""The REST backend: boxes of a ``boxlite serve`` server (``Boxlite.rest(url)``)."""

from __future__ import annotations

from .backend import RestBackend, RestImages
from .channel import RemoteChannel
from .transport import Transport

__all__ = ["RemoteChannel", "RestBackend", "RestImages", "Transport"]
