"""Backends: where a ``Boxlite`` runtime's boxes live, behind one interface (``base.Backend``).

``local.LocalBackend`` drives a ``BoxRuntime`` on this machine; ``rest.RestBackend`` talks to a
``boxlite serve`` server. Layering: ``boxlite.api`` -> ``backends`` -> ``runtime`` (local) or
HTTP (rest); nothing here imports ``boxlite.api`` beyond its option and result types.
Submodules are imported on use, so a local runtime never loads the HTTP client.
"""

from __future__ import annotations

from .base import Backend, ExecChannel, ExecCounters, ExecRequest, ImagesBackend, StartedExec

__all__ = ["Backend", "ExecChannel", "ExecCounters", "ExecRequest", "ImagesBackend", "StartedExec"]
