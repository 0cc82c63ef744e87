"""Named volumes: ``volume create|ls|inspect|rm`` (Docker's verbs; ids are assigned by BoxLite,
so ``create`` takes no name). A box mounts one with ``-v vol-…:/path[:ro]``."""

from __future__ import annotations

import dataclasses

import click

from ..api.runtime import Boxlite
from .common import ago, human_size, print_json, print_table, want_json, with_runtime
from .errors import EXIT_RUNTIME, describe, print_error


@click.group()
def volume() -> None:
    """Manage named volumes (a box mounts one with -v VOLUME_ID:/path)."""


@volume.command()
@with_runtime
async def create(rt: Boxlite) -> int:
    """Create a volume and print its id."""
    info = await rt.volumes.create()
    if want_json():
        print_json(dataclasses.asdict(info))
    else:
        click.echo(info.id)
    return 0


@volume.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only print ids.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", help="Output format.")
@with_runtime
async def ls(rt: Boxlite, quiet: bool, fmt: str) -> int:
    """List volumes."""
    infos = await rt.volumes.list()
    if quiet:
        for i in infos:
            click.echo(i.id)
    elif want_json(fmt=fmt):
        print_json([dataclasses.asdict(i) for i in infos])
    else:
        rows = [(i.id, human_size(i.size_bytes), ago(i.created_at)) for i in infos]
        print_table(["VOLUME ID", "SIZE", "CREATED"], rows)
    return 0


volume.add_command(ls, "list")


@volume.command()
@click.argument("ids", nargs=-1, required=True, metavar="VOLUME...")
@with_runtime
async def inspect(rt: Boxlite, ids: tuple[str, ...]) -> int:
    """Show volumes as JSON (an array, like docker volume inspect)."""
    found, failed = [], 0
    for volume_id in ids:
        try:
            found.append(dataclasses.asdict(await rt.volumes.get(volume_id)))
        except Exception as e:  # report every failure, keep going
            print_error(describe(e)[0])
            failed += 1
    print_json(found)
    return EXIT_RUNTIME if failed else 0


@volume.command()
@click.option("-f", "--force", is_flag=True, help="Remove even if stopped boxes name it; a missing volume is no error.")
@click.argument("ids", nargs=-1, required=True, metavar="VOLUME...")
@with_runtime
async def rm(rt: Boxlite, ids: tuple[str, ...], force: bool) -> int:
    """Remove volumes and their data."""
    failed = 0
    for volume_id in ids:
        try:
            await rt.volumes.remove(volume_id, force=force)
            click.echo(volume_id)
        except Exception as e:  # report every failure, keep going
            print_error(describe(e)[0])
            failed += 1
    return EXIT_RUNTIME if failed else 0
