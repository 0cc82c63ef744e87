"""``boxlite mcp``: the MCP server on stdin/stdout, over a local home or a REST server."""

from __future__ import annotations

import asyncio

from ..api.options import Options
from ..api.runtime import Boxlite
from .tools import build_server


def runtime_for(home: str | None, url: str | None = None, api_key: str | None = None) -> Boxlite:
    """The runtime the tools work on: the home on this machine, or a ``boxlite serve`` at ``url``."""
    if url:
        return Boxlite.rest(url, api_key=api_key)
    return Boxlite(Options(home_dir=home))


async def serve_stdio(runtime: Boxlite) -> None:
    """Serve until the client closes stdin; then stop the (non-detached) boxes this runtime started."""
    server = build_server(lambda: runtime)
    try:
        await server.run_stdio_async()
    finally:
        await runtime.shutdown()


def run_stdio(home: str | None, url: str | None = None, api_key: str | None = None) -> None:
    asyncio.run(serve_stdio(runtime_for(home, url, api_key)))
