"""``boxlite pause``, ``boxlite resume``, ``boxlite fork``: freeze a running box's processes
(memory kept, or saved to disk with ``--to-disk``), let them go on, copy a running box."""

from __future__ import annotations

import click

from ..api.runtime import Boxlite
from .boxes import _each
from .common import complete_box, find_box, with_runtime


@click.command()
@click.option("--to-disk", is_flag=True,
              help="Save the memory in the box's directory and free it (VM engine).")  # fmt: skip
@click.argument("boxes", nargs=-1, required=True, metavar="BOX...", shell_complete=complete_box)
@with_runtime
async def pause(rt: Boxlite, boxes: tuple[str, ...], to_disk: bool) -> int:
    """Pause running boxes: every process stops where it is and uses no CPU until resumed."""

    async def one(ref: str) -> None:
        await (await find_box(rt, ref)).pause(to_disk=to_disk)

    return await _each(boxes, one)


@click.command()
@click.argument("boxes", nargs=-1, required=True, metavar="BOX...", shell_complete=complete_box)
@with_runtime
async def resume(rt: Boxlite, boxes: tuple[str, ...]) -> int:
    """Resume paused boxes (a box paused to disk is restored in the background: it keeps
    running after boxlite exits)."""

    async def one(ref: str) -> None:
        await (await find_box(rt, ref)).resume(detach=True)

    return await _each(boxes, one)


@click.command()
@click.option("-n", "count", type=click.IntRange(1, 16), default=1, show_default=True, help="How many copies.")
@click.argument("box", metavar="BOX", shell_complete=complete_box)
@with_runtime
async def fork(rt: Boxlite, box: str, count: int) -> int:
    """Copy a running box (VM engine): new running boxes that go on from its memory and disk as
    they are now; prints their ids. The box itself goes on too."""
    for child in await (await find_box(rt, box)).fork(count):
        click.echo(child.id)
    return 0
