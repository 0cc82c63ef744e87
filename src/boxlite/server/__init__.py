"""``boxlite serve``: a REST + WebSocket server around one BoxLite runtime (see docs/rest.md)."""

from __future__ import annotations

from .listen import serve

__all__ = ["serve"]
