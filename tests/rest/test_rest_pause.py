"""Pause and resume through ``boxlite serve`` (``POST /v1/boxes/{id}/pause|resume``): the same
behaviour as the local runtime, errors typed on the client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import boxlite
from boxlite.remote import RemoteBoxlite
from rest.serverproc import Server, raw_client

COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.05; done"


async def _count(box: boxlite.SimpleBox) -> int:
    out = await box.exec("cat", "/tmp/count")
    assert out.exit_code == 0, out.stderr
    return int(out.stdout)


async def test_pause_resume_over_rest(remote: RemoteBoxlite, busybox_rootfs: Path) -> None:
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=remote) as box:  # type: ignore[arg-type]
        await box.exec("sh", "-c", f"({COUNTER}) </dev/null >/dev/null 2>&1 &")
        for _ in range(300):
            if (await box.exec("cat", "/tmp/count")).exit_code == 0:
                break
            await asyncio.sleep(0.1)
        await box.box.pause()
        assert box.box.info().state.status == "paused"
        assert (await remote.get_info(box.id)).state.status == "paused"  # type: ignore[union-attr]
        with pytest.raises(boxlite.InvalidStateError, match="paused"):
            await box.exec("true")
        await box.box.resume()
        assert box.box.info().state.status == "running"
        first = await _count(box)
        await asyncio.sleep(0.5)
        assert await _count(box) > first
        await box.box.pause()  # a paused box stops (the block's exit)


async def test_pause_routes_refuse_bad_input(remote: RemoteBoxlite, server: Server, busybox_rootfs: Path) -> None:
    client = raw_client(server)  # skips the SDK's checks: the server refuses too
    box = await remote.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=False))
    async with client:
        assert (await client.post("/v1/boxes/nope-nope/pause")).status_code == 404
        assert (await client.post(f"/v1/boxes/{box.id}/pause")).status_code == 409  # not running
        assert (await client.post(f"/v1/boxes/{box.id}/resume")).status_code == 409
        assert (await client.post(f"/v1/boxes/{box.id}/pause", params={"to_disk": "maybe"})).status_code == 400
    await remote.remove(box.id, force=True)


async def test_fork_over_rest(remote: RemoteBoxlite, busybox_rootfs: Path) -> None:
    """VM: copies that run; namespace: the typed refusal (CRIU), the source unharmed."""
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=remote) as box:  # type: ignore[arg-type]
        await box.exec("sh", "-c", "echo src > /root/f")
        with pytest.raises(boxlite.ConfigError):
            await box.box.fork(0)
        if box.info().engine == "namespace":
            with pytest.raises(boxlite.UnsupportedOptionError, match="criu"):
                await box.box.fork()
        else:
            (kid,) = await box.box.fork()
            assert kid.info().state.status == "running" and kid.id != box.id
            ex = await kid.exec("cat", ["/root/f"], stdin=False)
            assert await ex.stdout().read() == "src\n"
            await remote.remove(kid.id, force=True)
        assert (await box.exec("cat", "/root/f")).stdout == "src\n"
