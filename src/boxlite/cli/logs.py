"""``logs``: output of a box's main command (recorded by ``run``, ``run -d`` and ``start``)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import click

from ..api.runtime import Boxlite
from . import background
from .common import box_dir, find_box, with_runtime

POLL = 0.1


@click.command()
@click.option("-f", "--follow", is_flag=True, help="Keep printing output as the main command produces it.")
@click.option("-n", "--tail", type=int, default=None, metavar="N", help="Only the last N lines.")
@click.option("--system", is_flag=True, help="Show the box's boot and agent logs (diagnostics) instead.")
@click.argument("box_ref", metavar="BOX")
@with_runtime
async def logs(rt: Boxlite, box_ref: str, follow: bool, tail: int | None, system: bool) -> int:
    """Print the output of a box's main command."""
    box = await find_box(rt, box_ref)
    bdir = box_dir(rt, box.id)
    if system:
        for path in [bdir / "boot.log", *sorted((bdir / "run").glob("*.log"))]:
            if path.is_file():
                click.echo(f"==> {path} <==")
                _write(_tail(path.read_bytes(), tail))
        return 0
    path = background.console_log(bdir)
    if not path.exists():
        click.echo(
            f"boxlite: no logs for box {box_ref}: only the output of a main command (boxlite run/start) "
            "is recorded; 'boxlite logs --system' shows boot and agent logs",
            err=True,
        )
        return 0
    with open(path, "rb") as f:
        _write(_tail(f.read(), tail))
        while follow and (background.keeper_alive(bdir) or box.info().state.running):
            chunk = f.read()
            if chunk:
                _write(chunk)
            else:
                await asyncio.sleep(POLL)
        _write(f.read())
    return 0


def _tail(data: bytes, n: int | None) -> bytes:
    if n is None:
        return data
    if n <= 0:
        return b""
    lines = data.splitlines(keepends=True)
    return b"".join(lines[-n:])


def _write(data: bytes) -> None:
    if data:
        os.write(1, data)


__all__ = ["Path", "logs"]
