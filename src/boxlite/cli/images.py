"""Images: ``pull`` (with per-layer progress), ``images``, ``rmi``."""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import click

from ..api.runtime import Boxlite
from ..images import PullProgress
from . import compat
from .common import ago, human_size, print_json, print_table, want_json, with_runtime
from .errors import describe, print_error


class LayerBars:
    """Receives ``PullProgress`` callbacks and draws one bar per layer (when ``enabled``: rich is
    slow to import, ~40 ms, so a quiet or non-terminal pull never loads it)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tasks: dict[str, Any] = {}
        self.progress: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                console=Console(stderr=True), transient=False,
            )  # fmt: skip

    def __call__(self, p: PullProgress) -> None:
        if self.progress is None:
            self.tasks.setdefault(p.layer, None)
            return
        task = self.tasks.get(p.layer)
        if task is None:
            label = p.layer.split(":", 1)[-1][:12]
            task = self.tasks[p.layer] = self.progress.add_task(label, total=p.total or None)
        done = p.total if p.done else p.downloaded
        self.progress.update(task, completed=done, total=p.total or None)
        if p.done:
            self.progress.update(task, description=f"{p.layer.split(':', 1)[-1][:12]} done")

    def live(self) -> AbstractContextManager[object]:
        return self.progress if self.progress is not None else nullcontext()


async def ensure_image(rt: Boxlite, image: str) -> None:
    """Pull ``image`` with progress bars unless it is stored already (like ``docker run``)."""
    if await compat.has_image(rt, image):
        return
    click.echo(f"Unable to find image '{image}' locally", err=True)
    bars = LayerBars(enabled=sys.stderr.isatty())
    if bars.enabled:
        click.echo(f"Pulling {image}", err=True)
    with bars.live():
        info = await rt.images.pull(image, progress=bars)
    click.echo(f"{info.reference}: pulled {info.digest}", err=True)


@click.command()
@click.option("-q", "--quiet", is_flag=True, help="No progress bars; print only the image's config digest.")
@click.argument("reference", metavar="IMAGE")
@with_runtime
async def pull(rt: Boxlite, reference: str, quiet: bool) -> int:
    """Download an image from a registry."""
    bars = LayerBars(enabled=not quiet and not want_json() and sys.stderr.isatty())
    if bars.enabled:
        click.echo(f"Pulling {reference}", err=True)
    with bars.live():
        info = await rt.images.pull(reference, progress=bars)
    if want_json():
        print_json(info.__dict__)
    elif quiet:
        click.echo(info.config_digest)  # BoxLite's `pull -q`: scripts take the image id from it
    else:
        click.echo(f"{info.reference}: pulled {info.digest} ({len(bars.tasks)} layers, {human_size(info.size)})")
    return 0


@click.group(invoke_without_command=True)
@click.option(
    "-a", "--all", "all_images", is_flag=True, help="Also intermediate images (there are none: BoxLite's flag)."
)
@click.option("-q", "--quiet", is_flag=True, help="Only print references.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", help="Output format.")
@click.pass_context
def images(ctx: click.Context, quiet: bool, fmt: str, all_images: bool = False) -> int | None:
    """List stored images (``images build NAME``: build an offline image of a specialised box)."""
    if ctx.invoked_subcommand is not None:
        return None
    return _list_images(quiet, fmt)


@with_runtime
async def _list_images(rt: Boxlite, quiet: bool, fmt: str) -> int:
    infos = await rt.images.list()
    if quiet:
        for i in infos:
            click.echo(i.reference)
    elif want_json(fmt=fmt):
        print_json([i.__dict__ for i in infos])
    else:
        rows = [(i.reference, i.digest.split(":", 1)[-1][:12], human_size(i.size), ago(i.created)) for i in infos]
        print_table(["REFERENCE", "DIGEST", "SIZE", "CREATED"], rows)
    return 0


@click.command()
@click.option("-f", "--force", is_flag=True, help="Remove even if boxes use it.")
@click.argument("refs", nargs=-1, required=True, metavar="IMAGE...")
@with_runtime
async def rmi(rt: Boxlite, refs: tuple[str, ...], force: bool) -> int:
    """Remove images."""
    failed = 0
    for ref in refs:
        try:
            await rt.images.remove(ref, force=force)
            click.echo(f"Untagged: {ref}")
        except Exception as e:  # report every failure, keep going
            print_error(describe(e)[0])
            failed += 1
    return 125 if failed else 0


@images.command("build")
@click.argument("name", metavar="NAME")
@with_runtime
async def build(rt: Boxlite, name: str) -> int:
    """Build (once; cached by content) the offline image of a specialised box: browser, desktop or skill.

    Prints its reference, ``boxlite.local/NAME:KEY`` (``boxlite.local/NAME:latest`` names the same image)."""
    import asyncio

    from ..errors import ConfigError
    from ..images.recipes import RECIPES, ensure_recipe, recipe_image, recipe_reference

    if name not in RECIPES:
        raise ConfigError(f"unknown image recipe {name!r}; known: {', '.join(sorted(RECIPES))}")
    click.echo(f"Building the {name!r} image from Debian packages (cached once built)...", err=True)
    ref = await asyncio.to_thread(recipe_image, name, rt.home.root)
    if want_json():
        path = await asyncio.to_thread(ensure_recipe, name, rt.home.root / "images")  # built: just its path
        print_json({"name": name, "reference": ref, "latest": recipe_reference(name), "rootfs": str(path)})
    else:
        click.echo(ref)
    return 0
