"""Fixtures for CLI tests: run the installed ``boxlite`` command as a subprocess."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

import boxlite
from boxlite.engines.vm import accel
from support.cli import Cli


@pytest.fixture
def cli(tmp_path: Path, busybox_rootfs: Path, engine: str) -> Iterator[Cli]:
    """The CLI on a fresh home, once per engine of BOXLITE_TEST_ENGINES."""
    c = Cli(tmp_path / "home", busybox_rootfs, engine)
    notice = c.home / "cache" / "vm" / accel.NOTICE_MARKER  # the once-per-home TCG notice was seen:
    notice.parent.mkdir(parents=True)  # the tests check stderr line by line
    notice.touch()
    yield c
    if c.home.exists():
        asyncio.run(_remove_all(c.home))


async def _remove_all(home: Path) -> None:
    """Remove boxes a test left behind (in-process: cheaper than two more CLI runs)."""
    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home)))
    try:
        for info in await rt.list_info():
            await rt.remove(info.id, force=True)
    finally:
        await rt.shutdown()
