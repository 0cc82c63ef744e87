"""``logs``: output of a box's main process (``run -d``/``create`` CMD) or foreground ``run``.

The main process's log is capped and rotated (``main.log`` → ``main.log.1``): both are shown,
and ``--follow`` reopens the log when it is rotated. ``-t``/``--since``/``--until`` read the
time of each line from the index the log's writer keeps beside it (cli/logtimes.py)."""

from __future__ import annotations

import asyncio
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Protocol

import click

from ..api.logtimes import LineTimes, Stamper
from ..api.runtime import Boxlite
from .common import box_layout, complete_box, find_box, local_only, with_runtime
from .errors import fail

POLL = 0.1
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATIONS = re.compile(f"(?:{_DURATION.pattern})+")
_UNITS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


@click.command()
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output while the box runs.")
@click.option("-n", "--tail", type=int, default=None, metavar="N", help="Only the last N lines.")
@click.option("-t", "--timestamps", is_flag=True, help="Prefix each line with when it was written (RFC 3339, UTC).")
@click.option("--since", default=None, metavar="TIME", help="Only lines written since TIME (10m, 1h30m, RFC 3339).")
@click.option("--until", default=None, metavar="TIME", help="Only lines written before TIME (same forms).")
@click.option("--system", is_flag=True, help="Show the box's boot and agent logs (diagnostics) instead.")
@click.argument("box_ref", metavar="BOX", shell_complete=complete_box)
@with_runtime
async def logs(
    rt: Boxlite, box_ref: str, follow: bool, tail: int | None, timestamps: bool, since: str | None,
    until: str | None, system: bool,
) -> int:  # fmt: skip
    """Print the output of a box's main process (or of the `boxlite run` that created it)."""
    local_only(rt, "'boxlite logs'")
    out: _Render = _plain
    if timestamps or since is not None or until is not None:
        out = _Timed(timestamps, parse_time(since) if since else None, parse_time(until) if until else None)
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
        _write(_tail(_rotated(found, f, out) + _read(found, f, out), tail))
        while follow and box.info().state.running:
            offset = f.tell()
            chunk = f.read()
            if chunk:
                _write(out(found, f, chunk, offset))
            elif _replaced(found, f):  # rotated: the open file (now <log>.1) is read to its end
                _write(_missed(found, f, out))
                f.close()
                f = open(found, "rb")  # noqa: SIM115
            else:
                await asyncio.sleep(POLL)
        _write(_read(found, f, out))
    finally:
        f.close()
    return 0


class _Render(Protocol):
    def __call__(self, path: Path, f: BinaryIO, data: bytes, offset: int) -> bytes: ...


def _plain(path: Path, f: BinaryIO, data: bytes, offset: int) -> bytes:
    return data


class _Timed:
    """``-t``/``--since``/``--until``: one ``Stamper`` per log file (by inode: it may be renamed)."""

    def __init__(self, stamps: bool, since: int | None, until: int | None) -> None:
        self.args = (stamps, since, until)
        self.files: dict[int, Stamper] = {}

    def __call__(self, path: Path, f: BinaryIO, data: bytes, offset: int) -> bytes:
        ino = os.fstat(f.fileno()).st_ino
        stamper = self.files.get(ino)
        if stamper is None:  # its index names its inode: <log>.idx, or <log>.1.idx once rotated
            stamper = self.files[ino] = Stamper(LineTimes(f.fileno(), (str(path), f"{path}.1")), *self.args)
        return stamper.render(data, offset)


def _read(path: Path, f: BinaryIO, out: _Render) -> bytes:
    offset = f.tell()
    return out(path, f, f.read(), offset)


def _rotated(path: Path, current: BinaryIO, out: _Render) -> bytes:
    """What the log kept from before its last rotation (``<log>.1``, see agent/logfile.py);
    nothing if that is the file just opened as ``current`` (rotated a moment ago)."""
    try:
        with open(path.with_name(path.name + ".1"), "rb") as old:
            if os.fstat(old.fileno()).st_ino == os.fstat(current.fileno()).st_ino:
                return b""
            return _read(path, old, out)
    except OSError:
        return b""


def _missed(path: Path, read: BinaryIO, out: _Render) -> bytes:
    """A whole file a slow follower skipped: rotated twice since ``read`` (now gone) was opened,
    ``<log>.1`` is another file, written after ``read`` and before the current ``<log>``."""
    _write(_read(path, read, out))
    try:
        with open(f"{path}.1", "rb") as old:
            if os.fstat(old.fileno()).st_ino != os.fstat(read.fileno()).st_ino:
                return _read(path, old, out)
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


def parse_time(value: str, now_ns: int | None = None) -> int:
    """``--since``/``--until``: a duration before now (``10m``, ``1h30m``, ``2.5s``), Unix seconds
    (``1700000000.5``) or an RFC 3339 date/time (without an offset: local time), as ns."""
    text = value.strip()
    now_ns = time.time_ns() if now_ns is None else now_ns
    if text and _DURATIONS.fullmatch(text):
        total = sum(float(n) * _UNITS[unit] for n, unit in _DURATION.findall(text))
        return now_ns - int(total)
    if re.fullmatch(r"\d+(?:\.\d{1,9})?", text):
        whole, _, frac = text.partition(".")
        return int(whole) * 10**9 + int((frac + "000000000")[:9])
    fraction = re.search(r"(?<=:\d\d)\.(\d{1,9})(?!\d)", text)  # nanoseconds: datetime keeps micro
    nanos = int((fraction.group(1) + "000000000")[:9]) if fraction else 0
    if fraction:
        text = text[: fraction.start()] + text[fraction.end() :]
    try:
        when = datetime.fromisoformat(text.replace("z", "Z"))
        if when.tzinfo is None:
            when = when.astimezone()
    except (ValueError, OverflowError, OSError):
        raise fail(f"invalid time {value!r} (examples: 10m, 1h30m, 2026-01-02T15:04:05Z, 1700000000)") from None
    delta = when - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 10**9 + nanos
