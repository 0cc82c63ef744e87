"""Docker habits: ``kill``, ``wait``, ``version`` and ``info``."""

from __future__ import annotations

import asyncio
import os
import platform
import signal as signals
import sys
from typing import Any

import click

from .. import __version__
from ..api.runtime import Boxlite
from ..errors import BoxliteError, NotFoundError
from .boxes import _each
from .common import STATE, complete_box, find_box, is_local, print_json, want_json, with_runtime
from .errors import describe, fail, print_error

WAIT_POLL = 0.1
"""Seconds between two looks at a box ``wait`` is waiting for (any backend: a state poll)."""
STOPPING_SIGNALS = {signals.SIGKILL: 0.0, signals.SIGTERM: 10.0}
"""Signals with which ``kill`` stops the box, and how long the box then has before SIGKILL (the
runtime ends a box with SIGTERM then SIGKILL); any other signal goes to the box's main process
alone, through its agent, and the box goes on (unless the main process ends of it)."""


def parse_signal(value: str) -> signals.Signals:
    """``KILL``, ``SIGKILL``, ``kill`` or ``9`` -> ``Signals.SIGKILL``."""
    text = value.strip().upper()
    try:
        if text.isdigit():
            return signals.Signals(int(text))
        return signals.Signals[text if text.startswith("SIG") else "SIG" + text]
    except (KeyError, ValueError):
        raise fail(f"invalid signal {value!r} (examples: KILL, TERM, 9)") from None


@click.command()
@click.option("-s", "--signal", "sig", default="KILL", show_default=True, metavar="SIGNAL",
              help="KILL: stop the box at once; TERM: stop it (KILL after 10 s); another (HUP, USR1, 10...): "
                   "sent to its main process.")  # fmt: skip
@click.argument("boxes", nargs=-1, required=True, metavar="BOX...", shell_complete=complete_box)
@with_runtime
async def kill(rt: Boxlite, boxes: tuple[str, ...], sig: str) -> int:
    """Kill running boxes (their main process and every other process; --rm boxes are removed)."""
    chosen = parse_signal(sig)

    async def one(ref: str) -> None:
        box = await find_box(rt, ref)
        if not box.info().state.running and box.info().state.status != "paused":
            raise fail(f"box {ref} is not running")
        if chosen in STOPPING_SIGNALS:
            await box.stop(timeout=STOPPING_SIGNALS[chosen])
        else:
            await box.signal_main(int(chosen))

    return await _each(boxes, one, together=True)


@click.command("wait")
@click.argument("boxes", nargs=-1, required=True, metavar="BOX...", shell_complete=complete_box)
@with_runtime
async def wait(rt: Boxlite, boxes: tuple[str, ...]) -> int:
    """Block until boxes stop, then print each one's exit code (its main process's; 0 when none)."""
    failed = 0
    for ref in boxes:
        try:
            click.echo(await _wait_one(rt, ref))
        except BoxliteError as e:
            print_error(describe(e)[0])
            failed += 1
    return 125 if failed else 0


async def _wait_one(rt: Boxlite, ref: str) -> int:
    box_id = (await find_box(rt, ref)).id
    while True:
        info = await rt.get_info(box_id)
        if info is None:
            raise NotFoundError(f"box {ref} was removed before its exit code could be read")
        if not info.state.running and info.state.status not in ("paused", "stopping"):
            return info.state.exit_code or 0
        await asyncio.sleep(WAIT_POLL)


@click.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def version(fmt: str) -> int:
    """Versions of boxlite and its platform."""
    data = {
        "version": __version__,
        "python": platform.python_version(),
        "os": sys.platform,
        "arch": platform.machine(),
        "target": STATE.url or (f"ray:{STATE.ray}" if STATE.ray else "local"),
    }
    if want_json(fmt=fmt):
        print_json(data)
    else:
        labels = {"version": "Version", "python": "Python", "os": "OS", "arch": "Arch", "target": "Target"}
        for key, value in data.items():
            click.echo(f"{labels[key] + ':':<10}{value}")
    return 0


@click.command()
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@with_runtime
async def info(rt: Boxlite, fmt: str) -> int:
    """The runtime: version, home, virtualization, box and image counts (BoxLite's fields)."""
    boxes = await rt.list_info()
    try:
        images: int | None = len(await rt.images.list())
    except BoxliteError:
        images = None
    states = [b.state.status for b in boxes]
    data: dict[str, Any] = {
        "version": __version__,
        "homeDir": str(rt.home.root) if is_local(rt) else None,
        "target": STATE.url or (f"ray:{STATE.ray}" if STATE.ray else "local"),
        "virtualization": _virtualization(),
        "os": sys.platform,
        "arch": platform.machine(),
        "boxesTotal": len(boxes),
        "boxesRunning": sum(b.state.running for b in boxes),
        "boxesStopped": sum(s in ("stopped", "exited") for s in states),
        "boxesConfigured": states.count("configured"),
        "imagesCount": images,
    }
    if want_json(fmt=fmt):
        print_json(data)
    else:  # flat scalars: "key: value" lines are YAML
        for key, value in data.items():
            click.echo(f"{key}: {'null' if value is None else _yaml_scalar(value)}")
    return 0


def _virtualization() -> str:
    """Of this machine (the VM engine boots faster with KVM; without it QEMU emulates)."""
    if os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "available"
    return "unavailable: no usable /dev/kvm (the vm engine emulates the CPU)"


def _yaml_scalar(value: object) -> str:
    text = str(value)
    if isinstance(value, (int, float)) or text.replace("_", "").replace("-", "").replace(".", "").isalnum():
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
