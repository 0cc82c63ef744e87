"""Fixtures for CLI tests: run the installed ``boxlite`` command as a subprocess."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import boxlite
from boxlite.engines.vm import accel
from rest.serverproc import API_KEY, free_port, stop_server, wait_ready
from support.cli import Cli, Served


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


@pytest.fixture
def served(cli: Cli, tmp_path: Path) -> Iterator[Served]:
    """``boxlite serve`` (the CLI verb) on a free loopback port with an API key, debug step logs
    to a file."""
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**cli.env(), "BOXLITE_LOG": "debug"}
    args = ["--home", str(tmp_path / "srvhome"), "serve", "--host", "127.0.0.1", "--port", str(port),
            "--api-key", API_KEY, "--allow-any-host-path"]  # fmt: skip
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "boxlite.cli", *args], env=env, stdin=subprocess.PIPE,
                                stderr=err)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url)
        yield Served(url, log)
    finally:
        stop_server(proc)
