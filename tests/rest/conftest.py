"""A real ``boxlite serve`` (``python -m boxlite.server``) in a subprocess, reached through
``RemoteBoxlite`` over a unix socket or over TCP with an API key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import boxlite
from boxlite.remote import RemoteBoxlite
from rest.serverproc import Server, serving_tcp, start_server, stop_server, wait_ready


@pytest.fixture(scope="module", params=["unix", "tcp"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per test module and transport."""
    home = tmp_path_factory.mktemp("srv") / "home"
    if request.param == "tcp":
        with serving_tcp(home) as tcp:
            yield tcp
        return
    proc = start_server(home)
    try:
        url = f"unix://{home / 'boxlite.sock'}"
        wait_ready(proc, url)
        yield Server(url, None, home, proc)
    finally:
        stop_server(proc)


@pytest.fixture
async def remote(server: Server) -> AsyncIterator[RemoteBoxlite]:
    rt = boxlite.Boxlite.rest(server.url, api_key=server.api_key)
    yield rt
    await rt.shutdown(timeout=2)


@pytest.fixture
async def box(remote: RemoteBoxlite, busybox_rootfs: Path) -> AsyncIterator[boxlite.SimpleBox]:
    """Overrides the local ``box`` fixture: the same tests then run through the server."""
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=remote) as b:  # type: ignore[arg-type]
        yield b
