"""``boxlite network tunnel BOX PORT`` (BoxLite's verb): the URI of a box's service on its server."""

from __future__ import annotations

import click

from ..api.runtime import Boxlite
from .common import complete_box, find_box, with_runtime
from .errors import fail


@click.group()
def network() -> None:
    """Reach services inside boxes."""


@network.command()
@click.argument("box", metavar="BOX", shell_complete=complete_box)
@click.argument("port", type=click.IntRange(1, 65535))
@with_runtime
async def tunnel(rt: Boxlite, box: str, port: int) -> int:
    """Print a URI on the box's server that reaches PORT inside the box (needs --url or a login)."""
    from ..api.remote import RemoteBoxlite

    if not isinstance(rt, RemoteBoxlite):
        raise fail(
            "boxlite network tunnel needs a server (--url or 'boxlite auth login'): boxes on this machine have no "
            "ingress of their own (in Python: await box.network.tunnel(port))"
        )
    target = await find_box(rt, box)
    click.echo(await rt.tunnel_uri(target.id, port))
    return 0
