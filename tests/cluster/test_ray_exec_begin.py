"""Box.exec through the Ray cluster: a short command costs one actor call, a longer one streams.

* a command that ends within ``exec_wait`` is one ``exec_begin`` call (no streaming generator, no
  other call): its stdout, stderr and exit code come with the answer;
* a command that outlives it streams: its first output arrives while it still runs; a short
  command with more output than one answer carries gets all of it (the rest streams);
* ``exec_wait=0`` streams from the start; a bad ``exec_wait`` is a ``ConfigError``;
* an execution can be followed once (a second ``exec_follow`` of the same id is refused);
* a killed command whose output nobody reads stops costing pings once its exit is known, and its
  held output can still be read to the end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from raycluster import RayCluster

import boxlite
from boxlite.backends.ray import backend as ray_backend
from boxlite.errors import ConfigError, NotFoundError

pytestmark = [pytest.mark.namespace_only, pytest.mark.timeout(300)]


@pytest.fixture
async def rt(cluster: RayCluster, engine: str) -> AsyncIterator[boxlite.Boxlite]:
    runtime = cluster.runtime(engine, exec_wait=1.0)  # the longest: a short command ends within it, even under load
    yield runtime
    await runtime.shutdown(timeout=2)


@pytest.fixture
async def box(rt: boxlite.Boxlite, busybox_rootfs: Path) -> AsyncIterator[boxlite.Box]:
    b = await rt.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), cpus=0.25, network="disabled"))
    yield b
    await rt.remove(b.id, force=True)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The node-service methods the driver calls (plain calls and streaming generators)."""
    seen: list[str] = []
    call_raw, stream = ray_backend.NodeRef.call_raw, ray_backend.NodeRef.stream

    async def counted_call(self: Any, method: str, *args: Any, **kw: Any) -> Any:
        seen.append(method)
        return await call_raw(self, method, *args, **kw)

    def counted_stream(self: Any, method: str, *args: Any) -> Any:
        seen.append(method)
        return stream(self, method, *args)

    monkeypatch.setattr(ray_backend.NodeRef, "call_raw", counted_call)
    monkeypatch.setattr(ray_backend.NodeRef, "stream", counted_stream)
    return seen


async def test_a_short_command_is_one_actor_call(box: boxlite.Box, calls: list[str]) -> None:
    await (await box.exec("true")).wait()  # the box is seen ready: no readiness call below
    calls.clear()
    run = await box.exec("sh", ["-c", "echo out; echo err >&2; exit 3"])
    assert await run.stdout().read() == "out\n"
    assert await run.stderr().read() == "err\n"
    assert (await run.wait()).exit_code == 3
    assert calls == ["exec_begin"]


async def test_a_longer_command_streams_while_it_runs(box: boxlite.Box, calls: list[str]) -> None:
    run = await box.exec("sh", ["-c", "echo first; sleep 3; echo second"])
    out = run.stdout()
    first = await asyncio.wait_for(out.__aiter__().__anext__(), 2.5)
    assert first == "first\n"
    assert not run._channel.exit.done()  # type: ignore[attr-defined]  # still running: it streamed
    assert (await run.wait()).exit_code == 0
    assert "exec_follow" in calls

    # more output than one answer carries (64 KiB), from a command that ends at once: all of it
    big = await box.exec("head", ["-c", "300000", "/dev/zero"])
    assert len(await big.stdout().read_bytes()) == 300_000
    assert (await big.wait()).exit_code == 0


async def test_exec_wait_zero_streams_and_bad_values_are_refused(
    cluster: RayCluster, engine: str, box: boxlite.Box
) -> None:
    for bad in (-1.0, 5.0, "0.1"):
        with pytest.raises(ConfigError):
            cluster.runtime(engine, exec_wait=bad)
    await (await box.exec("true")).wait()  # made by its first use: from then on other drivers find it
    rt0 = cluster.runtime(engine, exec_wait=0.0)
    try:
        same = await rt0.get(box.id)
        assert same is not None
        run = await same.exec("sh", ["-c", "echo hi; exit 4"])
        assert await run.stdout().read() == "hi\n"
        assert (await run.wait()).exit_code == 4
    finally:
        await rt0.shutdown(timeout=2)


async def test_an_execution_is_followed_once(rt: boxlite.Boxlite, box: boxlite.Box) -> None:
    # output after exec_wait (1 s) comes through the driver's own exec_follow: it has claimed the
    # execution (an async actor may run two calls of one caller in either order)
    run = await box.exec("sh", ["-c", "sleep 1.5; echo up; exec sleep 30"])
    assert await asyncio.wait_for(run.stdout().__aiter__().__anext__(), 10) == "up\n"
    node = rt._backend._service(rt._backend.node_of(box.id))  # type: ignore[attr-defined]
    exec_id = run._channel.exec_id  # type: ignore[attr-defined]
    second = node.stream("exec_follow", exec_id)
    with pytest.raises(NotFoundError):
        async for ref in second:
            await node._await(ref, 30)
    await run.kill()
    assert (await run.wait()).exit_code != 0


async def test_a_killed_command_nobody_reads_stops_pinging(
    cluster: RayCluster, engine: str, busybox_rootfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings: list[float] = []
    ping = ray_backend.NodeRef.ping

    async def counted(self: Any) -> str:
        pings.append(time.monotonic())
        return await ping(self)

    monkeypatch.setattr(ray_backend.NodeRef, "ping", counted)
    rt = cluster.runtime(engine, exec_wait=0.0, ping_interval=0.3)
    box = await rt.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), cpus=0.25, network="disabled"))
    try:
        run = await box.exec("sh", ["-c", "head -c 3000000 /dev/zero; exec sleep 100"])
        await asyncio.sleep(1.5)  # its output is held at the window: nobody reads it
        assert pings  # the exit is not known yet: the node is watched
        await run.kill()
        assert (await asyncio.wait_for(run.wait(), 30)).exit_code != 0
        await asyncio.sleep(0.5)
        pings.clear()
        await asyncio.sleep(2.0)
        assert pings == []  # exit known, no reader: nothing to watch for (it pinged every 0.3 s for ever)
        data = await asyncio.wait_for(run.stdout().read_bytes(), 60)  # what it wrote before the kill
        assert 0 < len(data) < 3_000_000 and data == bytes(len(data))
        assert await asyncio.wait_for(run.stderr().read_bytes(), 30) == b""
    finally:
        await rt.remove(box.id, force=True)
        await rt.shutdown(timeout=2)
