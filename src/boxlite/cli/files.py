"""``cp``: copy files between the host and a box (``BOX:path`` on either side)."""

from __future__ import annotations

import click

from ..api.runtime import Boxlite
from .common import find_box, with_runtime
from .errors import fail


def split_box_path(arg: str) -> tuple[str | None, str]:
    """``BOX:/path`` → (BOX, /path); a host path (also ``./a:b`` or ``/x:y``) → (None, arg)."""
    if arg.startswith(("/", ".", "~")) or ":" not in arg:
        return None, arg
    box, _, path = arg.partition(":")
    return (box, path or "/") if box else (None, arg)


@click.command()
@click.argument("src")
@click.argument("dst")
@with_runtime
async def cp(rt: Boxlite, src: str, dst: str) -> int:
    """Copy files between a box and the host: `cp BOX:PATH HOSTPATH` or `cp HOSTPATH BOX:PATH`.

    A stopped box is started for the copy and stopped again afterwards."""
    src_box, src_path = split_box_path(src)
    dst_box, dst_path = split_box_path(dst)
    if (src_box is None) == (dst_box is None):
        raise fail("exactly one of SRC and DST must be BOX:PATH (e.g. 'boxlite cp mybox:/etc/hosts .')")
    box = await find_box(rt, src_box or dst_box or "")
    was_running = box.info().state.running
    try:
        if src_box is not None:
            if not src_path.startswith("/"):
                raise fail(f"box path must be absolute: {src_path}")
            await box.copy_out(src_path, dst_path)
        else:
            if not dst_path.startswith("/"):
                raise fail(f"box path must be absolute: {dst_path}")
            await box.copy_in(src_path, dst_path)
    finally:
        if not was_running and box.info().state.running:
            await box.stop()
    return 0
