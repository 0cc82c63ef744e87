"""``logs``: output of a box's main process (``run -d``/``create`` CMD) or foreground ``run``.

The main process's log is capped and rotated (``main.log`` → ``main.log.1``): both are shown,
and ``--follow`` reopens the log when it is rotated."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import BinaryIO

import click

from ..api.runtime import Boxlite
from .common import box_layout, complete_box, find_box, local_only, with_runtime

POLL = 0.1


@click.command()
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output while the box runs.")
@click.option("-n", "--tail", type=int, default=None, metavar="N", help="Only the last N lines.")
@click.option("--system", is_flag=True, help="Show the box's boot and agent logs (diagnostics) instead.")
@click.argument("box_ref", metavar="BOX", shell_complete=complete_box)
@with_runtime
async def logs(rt: Boxlite, box_ref: str, follow: bool, tail: int | None, system: bool) -> int:
    """Print the output of a box's main process (or of the `boxlite run` that created it)."""
    local_only(rt, "'boxlite logs'")
    box = await find_box(rt, box_ref)
    layout = box_layout(rt, box.id)
    if system:
        for path in layout.system_logs():
            if path.is_file():
                click.echo(f"==> {path} <==")
                _write(_tail(path.read_bytes(), tail))
        return 0
    found = next((p for p in (layout.main_log, layout.cli_console_log) if p.exists()), None)
    if found is None:
        if not follow or not box.info().state.running:
            click.echo(
                f"boxlite: no logs for box {box_ref}: it has no main process and no recorded 'boxlite run' output "
                "('boxlite logs --system' shows boot and agent logs)",
                err=True,
            )
            return 0
        found = layout.main_log
        while not found.exists() and box.info().state.running:
            await asyncio.sleep(POLL)
        if not found.exists():
            return 0
    f = open(found, "rb")  # noqa: SIM115 (reopened on rotation; closed below)
    try:
        _write(_tail(_rotated(found, f) + f.read(), tail))
        while follow and box.info().state.running:
            chunk = f.read()
            if chunk:
                _write(chunk)
            elif _replaced(found, f):  # rotated: the open file (now <log>.1) is read to its end
                _write(_missed(found, f))
                f.close()
                f = open(found, "rb")  # noqa: SIM115
            else:
                await asyncio.sleep(POLL)
        _write(f.read())
    finally:
        f.close()
    return 0


def _rotated(path: Path, current: BinaryIO) -> bytes:
    """What the log kept from before its last rotation (``<log>.1``, see agent/logfile.py);
    nothing if that is the file just opened as ``current`` (rotated a moment ago)."""
    try:
        with open(path.with_name(path.name + ".1"), "rb") as old:
            if os.fstat(old.fileno()).st_ino == os.fstat(current.fileno()).st_ino:
                return b""
            return old.read()
    except OSError:
        return b""


def _missed(path: Path, read: BinaryIO) -> bytes:
    """A whole file a slow follower skipped: rotated twice since ``read`` (now gone) was opened,
    ``<log>.1`` is another file, written after ``read`` and before the current ``<log>``."""
    _write(read.read())
    try:
        with open(f"{path}.1", "rb") as old:
            if os.fstat(old.fileno()).st_ino != os.fstat(read.fileno()).st_ino:
                return old.read()
    except OSError:
        pass
    return b""


def _replaced(path: Path, f: BinaryIO) -> bool:
    """``path`` names another file than the open ``f`` (the log was rotated)."""
    try:
        return os.stat(path).st_ino != os.fstat(f.fileno()).st_ino
    except FileNotFoundError:
        return False


def _tail(data: bytes, n: int | None) -> bytes:
    if n is None:
        return data
    if n <= 0:
        return b""
    return b"".join(data.splitlines(keepends=True)[-n:])


def _write(data: bytes) -> None:
    if data:
        os.write(1, data)
