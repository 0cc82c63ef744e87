"""The web dashboard of ``boxlite serve`` (``/dashboard/``) and its API docs (``/docs``).

A single page over the REST API (boxes, terminal, files, images, logs), served from bundled
assets. See docs/dashboard.md; the browser-session design is in ``sessions``.
"""

from __future__ import annotations

from fastapi import FastAPI

from .middleware import DashboardMiddleware


def install(app: FastAPI, api_key: str | None) -> None:
    """Serve the dashboard on ``app``. Call after the API-key middleware is added: this one must
    run before it (it turns a browser session into the key)."""
    app.add_middleware(DashboardMiddleware, api_key=api_key)
