"""``serve``: run the REST server of ``boxlite.server`` for this home."""

from __future__ import annotations

import importlib

import click

from .common import STATE
from .errors import fail


@click.command()
@click.option("--socket", "socket_path", metavar="PATH", help="Unix socket (default: <home>/boxlite.sock).")
@click.option("--host", help="TCP address to listen on (needs an API key).")
@click.option("--port", type=int, help="TCP port.")
@click.option("--api-key", envvar="BOXLITE_API_KEY", help="Bearer token clients must send.")
@click.option("--insecure-no-auth", is_flag=True, help="Allow TCP without a key (loopback only).")
@click.option("--exit-on-stdin-eof", is_flag=True, help="Stop when stdin is closed.")
@click.option("--log-level", default="warning", show_default=True, help="Server log level.")
@click.option("--mcp", is_flag=True, help="Also serve MCP (streamable HTTP) at /mcp, behind the same auth.")
@click.option(
    "--allow-host-path", "allow_host_paths", multiple=True, metavar="DIR",
    help="TCP clients may name DIR itself as a volume or rootfs_path (repeatable; default: none).",
)  # fmt: skip
@click.option(
    "--allow-any-host-path", is_flag=True,
    help="TCP clients may name any host path (they get the host: BoxLite's behaviour).",
)  # fmt: skip
@click.option(
    "--allow-registry", "allow_registries", multiple=True, metavar="HOST[:PORT]",
    help="Pulls for TCP clients may reach this registry at a non-public address (repeatable; "
    "public addresses and the home's configured registries always).",
)  # fmt: skip
@click.option(
    "--allow-any-registry", is_flag=True,
    help="Pulls for TCP clients may connect anywhere, loopback and LAN included (BoxLite's behaviour).",
)  # fmt: skip
@click.option(
    "--allow-box-lan", is_flag=True,
    help="Boxes TCP clients create may reach private networks (default: public addresses only).",
)  # fmt: skip
def serve(
    socket_path: str | None, host: str | None, port: int | None, api_key: str | None, insecure_no_auth: bool,
    exit_on_stdin_eof: bool, log_level: str, mcp: bool = False, allow_host_paths: tuple[str, ...] = (),
    allow_any_host_path: bool = False, allow_registries: tuple[str, ...] = (), allow_any_registry: bool = False,
    allow_box_lan: bool = False,
) -> int:  # fmt: skip
    """Serve the BoxLite REST API for this home (until Ctrl-C)."""
    if STATE.remote:
        raise fail("'boxlite serve' serves a home on this machine: drop --url/--ray")
    try:
        server = importlib.import_module("boxlite.server")
        entry = server.serve
    except ImportError as e:
        if e.name and not e.name.startswith("boxlite"):
            raise fail(_missing(e.name)) from None
        raise fail("'boxlite serve' is not available: this installation has no boxlite.server") from None
    except AttributeError:
        raise fail("'boxlite serve' is not available: boxlite.server has no serve()") from None
    try:
        entry(STATE.home, socket_path, host, port, api_key, insecure_no_auth,
              exit_on_stdin_eof=exit_on_stdin_eof, log_level=log_level, mcp=mcp,
              allow_host_paths=allow_host_paths, allow_any_host_path=allow_any_host_path,
              allow_registries=allow_registries, allow_any_registry=allow_any_registry,
              allow_box_lan=allow_box_lan)  # fmt: skip
    except ImportError as e:  # uvicorn/fastapi are imported lazily by the server
        raise fail(_missing(e.name)) from None
    except KeyboardInterrupt:
        pass
    return 0


def _missing(module: str | None) -> str:
    return f"the server needs extra packages ({module} is missing): pip install 'boxlite[server]'"
