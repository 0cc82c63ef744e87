"""``mcp``: serve BoxLite's MCP tools over stdio (for an agent that spawns ``boxlite mcp``)."""

from __future__ import annotations

import click

from .common import STATE
from .errors import fail


@click.command("mcp")
@click.option("--url", metavar="URL", help="Work on the boxes of a 'boxlite serve' at URL instead of this home.")
@click.option("--api-key", envvar="BOXLITE_API_KEY", help="API key for --url.")
def mcp(url: str | None, api_key: str | None) -> int:
    """Serve MCP tools (boxes, exec, files, code) on stdin/stdout until stdin closes."""
    try:  # imported here: no other command loads the MCP SDK
        from ..mcp.stdio import run_stdio
    except ImportError as e:
        if e.name and not e.name.startswith("boxlite"):
            missing = f"'boxlite mcp' needs extra packages ({e.name} is missing)"
            raise fail(f"{missing}: pip install 'boxlite[server]'") from None
        raise
    try:
        if STATE.ray:
            raise fail("'boxlite mcp' works on this home or a server (--url), not on a Ray cluster yet")
        run_stdio(STATE.home, url or STATE.url, api_key or STATE.api_key)  # `boxlite --url U mcp` too
    except KeyboardInterrupt:
        pass
    return 0
