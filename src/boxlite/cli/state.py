"""``boxlite snapshot create|ls|restore|rm``, ``boxlite clone``, ``boxlite export`` and
``boxlite import``: a box's disk state (copy-on-write snapshots, clones, ``.boxlite`` archives)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import click

from ..api.options import ExportOptions
from ..api.runtime import Boxlite
from .boxes import _each
from .common import (
    ago,
    complete_box,
    find_box,
    human_size,
    parse_size,
    print_json,
    print_table,
    want_json,
    with_runtime,
)


@click.group()
def snapshot() -> None:
    """Named copy-on-write snapshots of a box's disk."""


@snapshot.command("create")
@click.argument("box", metavar="BOX", shell_complete=complete_box)
@click.argument("name")
@with_runtime
async def snapshot_create(rt: Boxlite, box: str, name: str) -> int:
    """Snapshot BOX's disk as NAME (a running box is frozen while its writable layer is copied)."""
    info = await (await find_box(rt, box)).snapshot.create(name=name)
    click.echo(info.name)
    return 0


@snapshot.command("ls")
@click.argument("box", metavar="BOX", shell_complete=complete_box)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@with_runtime
async def snapshot_ls(rt: Boxlite, box: str, fmt: str) -> int:
    """List BOX's snapshots, oldest first."""
    snaps = await (await find_box(rt, box)).snapshot.list()
    if want_json(fmt=fmt):
        print_json([dataclasses.asdict(s) for s in snaps])
        return 0
    rows = [(s.name, ago(_iso(s.created_at)), human_size(s.size_bytes)) for s in snaps]
    print_table(["NAME", "CREATED", "SIZE"], rows)
    return 0


@snapshot.command("restore")
@click.argument("box", metavar="BOX", shell_complete=complete_box)
@click.argument("name")
@with_runtime
async def snapshot_restore(rt: Boxlite, box: str, name: str) -> int:
    """Make BOX's disk what it was at snapshot NAME (BOX must be stopped)."""
    await (await find_box(rt, box)).snapshot.restore(name)
    return 0


@snapshot.command("rm")
@click.argument("box", metavar="BOX", shell_complete=complete_box)
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@with_runtime
async def snapshot_rm(rt: Boxlite, box: str, names: tuple[str, ...]) -> int:
    """Remove snapshots of BOX (the box itself is unchanged)."""
    target = await find_box(rt, box)

    async def one(name: str) -> None:
        await target.snapshot.remove(name)

    return await _each(names, one)


@click.command()
@click.argument("box", metavar="BOX", shell_complete=complete_box)
@click.option("--name", default=None, help="Name of the new box.")
@with_runtime
async def clone(rt: Boxlite, box: str, name: str | None) -> int:
    """Create a new stopped box with BOX's disk as it is now; prints its id."""
    copy = await (await find_box(rt, box)).clone_box(name=name)
    click.echo(copy.id)
    return 0


@click.command("export")
@click.argument("box", metavar="BOX", shell_complete=complete_box)
@click.option("-o", "--output", default=".", show_default=True, metavar="PATH",
              help="Archive file, or a directory for <name or id>.boxlite.")  # fmt: skip
@click.option("--no-image", is_flag=True, help="Leave the image out (the importer pulls it by reference).")
@click.option("--gzip", "gz", is_flag=True, help="Compress the archive with gzip.")
@click.option("--max-size", metavar="SIZE", default=None,
              help="Refuse an archive larger than this (e.g. 100k, 500m, 4g; plain number = MiB).")  # fmt: skip
@with_runtime
async def export(rt: Boxlite, box: str, output: str, no_image: bool, gz: bool, max_size: str | None) -> int:
    """Write BOX (config, disk, image) to one .boxlite archive; prints its path."""
    options = ExportOptions(
        include_image=not no_image, compression="gzip" if gz else "none", max_bytes=parse_size(max_size, "--max-size")
    )
    click.echo(await (await find_box(rt, box)).export(dest=output, options=options))
    return 0


@click.command("import")
@click.argument("archive", type=click.Path(dir_okay=False))
@click.option("--name", default=None, help="Name of the new box.")
@click.option("--engine", type=click.Choice(["namespace", "vm"]), default=None,
              help="Engine of the new box (default: the archive's; a namespace box can become a vm box).")  # fmt: skip
@with_runtime
async def import_(rt: Boxlite, archive: str, name: str | None, engine: str | None) -> int:
    """Create a stopped box from a .boxlite archive (checked before anything is kept); prints its id."""
    box = await rt.import_box(archive, name=name, engine=engine)
    click.echo(box.id)
    return 0


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()
