"""``serve``: the REST server (implemented in ``boxlite.server``)."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import click

from .common import STATE
from .errors import fail


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8100, show_default=True, help="Port to listen on.")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int) -> int:
    """Serve the BoxLite REST API for this home (needs the 'server' extra)."""
    try:
        server = importlib.import_module("boxlite.server")
    except ImportError as e:
        if e.name and not e.name.startswith("boxlite.server") and e.name != "boxlite":
            missing = f"the server needs extra packages ({e.name} is missing): pip install 'boxlite[server]'"
            raise fail(missing) from None
        raise fail("'boxlite serve' is not available: this installation has no boxlite.server module") from None
    entry: Any = getattr(server, "serve", None) or getattr(server, "main", None)
    if entry is None:
        raise fail("boxlite.server has no serve() or main() entry point")
    params = inspect.signature(entry).parameters
    kwargs = {k: v for k, v in {"host": host, "port": port, "home": STATE.home, "args": ctx.args}.items()
              if k in params}  # fmt: skip
    result = entry(**kwargs)
    if inspect.iscoroutine(result):
        import asyncio

        result = asyncio.run(result)
    return int(result or 0)
