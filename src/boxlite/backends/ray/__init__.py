"""``RayBackend``: the boxes of a Ray cluster, one BoxLite node service (a Ray actor owning a
local runtime) per Ray node. Imported on use: ``ray`` is an optional dependency (extra ``ray``)."""

from __future__ import annotations

from .backend import RayBackend, RayOptions

__all__ = ["RayBackend", "RayOptions"]
