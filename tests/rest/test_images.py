"""Images through the server: pull from a local registry, list, run, remove."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import boxlite
from rest.serverproc import start_server, stop_server, wait_ready
from support.images import busybox_layout
from support.registry import RegistryServer, start_registry


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RegistryServer, str]]:
    server = start_registry(tmp_path_factory.mktemp("registry"))  # docker-registry: installed by scripts/test.sh
    try:
        yield server, server.push_layout(busybox_layout(), "busybox")
    finally:
        server.stop()


async def test_pull_list_run_remove(pushed: tuple[RegistryServer, str], tmp_path: Path) -> None:
    registry, ref = pushed
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.json").write_text(json.dumps({"image_registries": [{"host": registry.host, "transport": "http"}]}))
    proc = start_server(home)
    try:
        wait_ready(proc, f"unix://{home / 'boxlite.sock'}")
        rt = boxlite.Boxlite.rest(f"unix://{home / 'boxlite.sock'}")
        events: list[boxlite.images.PullProgress] = []
        info = await rt.images.pull(ref, events.append)
        assert info.reference == ref and info.digest.startswith("sha256:")
        assert events and all(e.done for e in events if e.downloaded == e.total) and any(e.done for e in events)
        assert (await rt.images.pull(ref)) == info  # again, without progress
        with pytest.raises(boxlite.NotFoundError):
            await rt.images.pull(f"{registry.host}/no-such-image:latest", events.append)
        assert [i.reference for i in await rt.images.list()] == [ref]
        async with boxlite.SimpleBox(image=ref, runtime=rt) as box:  # type: ignore[arg-type]
            assert (await box.exec("echo", "from-registry")).stdout == "from-registry\n"
        await rt.images.remove(ref)
        assert await rt.images.list() == []
        await rt.shutdown()
    finally:
        stop_server(proc)
