"""Box lifecycle and listing: ``start stop restart rm ls/ps inspect``."""

from __future__ import annotations

import asyncio
import shlex
from typing import Any

import click

from ..api.runtime import Boxlite
from ..errors import BoxliteError, NotFoundError
from . import compat
from .common import (
    ago,
    box_layout,
    complete_box,
    find_box,
    is_local,
    print_json,
    print_table,
    short_id,
    want_json,
    with_runtime,
)
from .errors import CliError, describe, fail, print_error
from .run import start_detached

TOGETHER = 16
"""Boxes ``stop``, ``kill`` and ``rm`` work on at once."""


async def _each(refs: tuple[str, ...], action: Any, together: bool = False) -> int:
    """Apply ``action(ref)`` to every box; report each one in the order given, failures one line
    each (docker style). ``together``: at most ``TOGETHER`` at once, as docker stops, kills and
    removes boxes in parallel (ten boxes that ignore SIGTERM stop in one grace, not ten)."""
    if together:
        gate = asyncio.Semaphore(TOGETHER)

        async def gated(ref: str) -> None:
            async with gate:
                await action(ref)

        tasks = [asyncio.ensure_future(gated(ref)) for ref in refs]
        outcomes: Any = zip(refs, tasks, strict=True)
    else:
        outcomes = ((ref, action(ref)) for ref in refs)  # one at a time, each awaited in turn
    failed = 0
    for ref, pending in outcomes:
        try:
            await pending
            click.echo(ref)
        except BoxliteError as e:
            print_error(describe(e)[0])
            failed += 1
        except CliError as e:  # refused by the verb itself (e.g. a running box without -f)
            print_error(e.message)
            failed += 1
    return 125 if failed else 0


@click.command()
@click.argument("boxes", nargs=-1, required=True, metavar="BOX...", shell_complete=complete_box)
@with_runtime
async def start(rt: Boxlite, boxes: tuple[str, ...]) -> int:
    """Start stopped boxes (in the background; they keep running after boxlite exits)."""

    async def one(ref: str) -> None:
        await start_detached(await find_box(rt, ref))

    return await _each(boxes, one)


@click.command()
@click.option("-t", "--time", "timeout", type=float, default=10.0, show_default=True,
              help="Seconds to wait for processes to exit before killing them.")  # fmt: skip
@click.argument("boxes", nargs=-1, required=True, metavar="BOX...", shell_complete=complete_box)
@with_runtime
async def stop(rt: Boxlite, boxes: tuple[str, ...], timeout: float) -> int:
    """Stop running boxes (boxes created with --rm are removed)."""

    async def one(ref: str) -> None:
        await (await find_box(rt, ref)).stop(timeout=timeout)

    return await _each(boxes, one, together=True)


@click.command()
@click.option("-t", "--time", "timeout", type=float, default=10.0, show_default=True,
              help="Seconds to wait for processes to exit before killing them.")  # fmt: skip
@click.argument("boxes", nargs=-1, required=True, metavar="BOX...", shell_complete=complete_box)
@with_runtime
async def restart(rt: Boxlite, boxes: tuple[str, ...], timeout: float) -> int:
    """Stop then start boxes."""

    async def one(ref: str) -> None:
        box = await find_box(rt, ref)
        if box.info().auto_remove:
            raise fail(f"box {ref} was created with --rm; stopping would remove it")
        await box.stop(timeout=timeout)
        await start_detached(box)

    return await _each(boxes, one)


@click.command()
@click.option("-f", "--force", is_flag=True, help="Stop running boxes first.")
@click.option("-a", "--all", "every", is_flag=True, help="Remove every box (asks first on a terminal, unless -f).")
@click.argument("boxes", nargs=-1, metavar="BOX...", shell_complete=complete_box)
@with_runtime
async def rm(rt: Boxlite, boxes: tuple[str, ...], force: bool, every: bool = False) -> int:
    """Remove boxes (each one it can; errors are reported one per line)."""
    if every == bool(boxes):
        raise fail("give BOX... or --all (see 'boxlite rm --help')")
    if every:
        boxes = tuple(i.id for i in await rt.list_info())
        if not force and boxes and not _confirm(f"Remove all {len(boxes)} boxes?"):
            raise fail("not confirmed: nothing removed (use 'boxlite rm --all --force' in scripts)")

    async def one(ref: str) -> None:
        box = await find_box(rt, ref)
        if box.info().state.running and not force:
            raise fail(f"box {ref} is running: stop it first or use 'boxlite rm -f'")
        await rt.remove(box.id, force=force)

    return await _each(boxes, one, together=True)


def _confirm(question: str) -> bool:
    """Ask on a terminal; without one the answer is no (scripts say --force)."""
    import sys

    if not sys.stdin.isatty():
        return False
    return click.confirm(question, default=False, err=True)


@click.command("ls")
@click.option("-a", "--all", "show_all", is_flag=True, help="Show all boxes (default: running and paused only).")
@click.option("-q", "--quiet", is_flag=True, help="Only print box ids.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", help="Output format.")
@click.option("--no-trunc", is_flag=True, help="Print full ids.")
@with_runtime
async def ls(rt: Boxlite, show_all: bool, quiet: bool, fmt: str, no_trunc: bool) -> int:
    """List boxes."""
    infos = [i for i in await rt.list_info() if show_all or i.state.running or i.state.status == "paused"]
    if quiet:
        for info in infos:
            click.echo(info.id if no_trunc else short_id(info.id))
    elif want_json(fmt=fmt):
        print_json([{**_box_json(i.to_dict()), **compat.box_details(rt, i)} for i in infos])
    else:
        rows = []
        for i in infos:
            details = compat.box_details(rt, i)
            command = shlex.join(details["command"]) if details["command"] else ""
            command = command if no_trunc or len(command) <= 30 else command[:29] + "…"
            ref = i.id if no_trunc else short_id(i.id)
            ports = ", ".join(details["ports"])
            rows.append((ref, i.name or "", _trim(i.image, no_trunc), command, _state(i), ports,
                         ago(i.created_at)))  # fmt: skip
        print_table(["ID", "NAME", "IMAGE", "COMMAND", "STATE", "PORTS", "CREATED"], rows)
    return 0


def _state(info: Any) -> str:
    """The STATE column: the box's state, with its health when checked ("running (healthy)")."""
    health = info.health_status.state
    return str(info.state) if health.is_none() else f"{info.state} ({health})"


def _trim(text: str, no_trunc: bool, width: int = 40) -> str:
    return text if no_trunc or len(text) <= width else "…" + text[-(width - 1) :]


def _box_json(data: dict[str, Any]) -> dict[str, Any]:
    data["short_id"] = short_id(data["id"])
    return data


@click.command()
@click.option("-f", "--format", "fmt", default="json", show_default=True, metavar="json|yaml|TEMPLATE",
              help="json, yaml, or a template printed per box, e.g. '{{.State.Status}}', '{{json .Env}}'.")  # fmt: skip
@click.option("-l", "--latest", is_flag=True, help="The most recently created box.")
@click.argument("refs", nargs=-1, metavar="BOX|IMAGE...", shell_complete=complete_box)
@with_runtime
async def inspect(rt: Boxlite, refs: tuple[str, ...], fmt: str = "json", latest: bool = False) -> int:
    """Show boxes (or images) as JSON, or fields of them (--format)."""
    if latest == bool(refs):
        raise fail("give BOX|IMAGE... or --latest")
    if latest:
        newest = await rt.list_info()  # newest first
        if not newest:
            raise NotFoundError("no boxes")
        refs = (newest[0].id,)
    out: list[dict[str, Any]] = []
    images = None
    for ref in refs:
        try:
            box = await find_box(rt, ref)
        except NotFoundError:
            images = images if images is not None else await rt.images.list()
            match = [i for i in images if ref in (i.reference, i.digest, i.image_id)]
            if not match:
                raise NotFoundError(f"no such box or image: {ref}") from None
            out.append({"type": "image", **match[0].__dict__})
            continue
        data = _box_json(box.info().to_dict())
        data["image_config"] = compat.image_config(box)
        if data["image_config"].get("env"):
            image_env = dict(str(e).partition("=")[::2] for e in data["image_config"]["env"])
            data["image_config"]["env"] = [f"{k}={v}" for k, v in compat.masked_env(image_env).items()]
        data.update(compat.box_details(rt, box.info()))
        if is_local(rt):
            data["dir"] = str(box_layout(rt, box.id).root)
        out.append({"type": "box", **data})
    if fmt == "json":
        print_json(out)
    elif fmt == "yaml":
        from .yamlout import dump

        click.echo(dump(out), nl=False)
    else:
        from .template import render

        for item in out:
            click.echo(render(fmt, item))
    return 0
