"""Boxes on a real Ray cluster of three nodes on this machine (``Boxlite.ray``).

The cluster is a head and two workers started with ``ray start`` (one CPU each, small object
stores, each node with its own BoxLite home through ``BOXLITE_HOME``). The last test kills one
worker's raylet: its boxes must fail with ``BoxDiedError`` naming the node, show as lost, and
the other nodes' boxes keep working; then it restarts the worker on the same home.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from raycluster import NODES, RayCluster

import boxlite
from boxlite.backends.ray.channel import WINDOW
from boxlite.errors import BoxDiedError, RequestTooLargeError, ResourceExhaustedError

pytestmark = [pytest.mark.namespace_only, pytest.mark.timeout(600)]


async def _boxes(rt: boxlite.Boxlite, rootfs: Path, n: int, prefix: str) -> list[boxlite.Box]:
    return [await rt.create(boxlite.BoxOptions(rootfs_path=str(rootfs), cpus=1), name=f"{prefix}{i}") for i in range(n)]


async def within(step: Any, what: str, seconds: float = 60.0) -> Any:
    """``step``'s result; a step that hangs fails the test naming it (not at the file's timeout)."""
    try:
        return await asyncio.wait_for(step, seconds)
    except asyncio.TimeoutError:
        raise AssertionError(f"{what} did not finish within {seconds:g}s") from None


@pytest.mark.timeout(240)
async def test_boxes_spread_over_nodes_and_work(
    cluster: RayCluster, busybox_rootfs: Path, engine: str, tmp_path: Path
) -> None:
    rt = cluster.runtime(engine)
    homes = cluster.homes
    boxes = await _boxes(rt, busybox_rootfs, NODES, "w")
    backend = rt._backend
    nodes = {backend.node_of(b.id) for b in boxes}  # type: ignore[attr-defined]
    assert len(nodes) == NODES  # spread: one box per node (each node has one CPU)
    with pytest.raises(ResourceExhaustedError):  # every node's CPU is taken
        await rt.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), cpus=1))
    # each node's boxes live in that node's own home
    assert sorted(len(list((h / "boxes").iterdir())) for h in homes) == [1] * NODES

    for box in boxes:
        # streamed: the first line arrives while the command still runs
        ex = await box.exec("sh", ["-c", "echo first; sleep 4; echo second; echo oops >&2; exit 3"])
        start = time.monotonic()
        first = await ex.stdout().__aiter__().__anext__()
        assert first.strip() == "first" and time.monotonic() - start < 3.5
        status = await ex.wait()
        assert status.exit_code == 3

    # the teardown's check of leftovers sees the boxes' processes
    pids = {b.info().state.pid for b in boxes}
    assert None not in pids and pids <= set(cluster.started_here())

    box = boxes[0]
    # a big output goes through the bounded buffers intact
    ex = await box.exec("sh", ["-c", "head -c 3000000 /dev/zero; echo done >&2"])
    data = await ex.stdout().read_bytes()
    assert len(data) == 3_000_000 and set(data) == {0}
    assert (await ex.stderr().read()).strip() == "done"
    assert (await ex.wait()).exit_code == 0
    # stdin
    ex = await box.exec("cat")
    stdin = ex.stdin()
    await stdin.write(b"x" * 700_000)
    await stdin.close()
    assert len(await ex.stdout().read_bytes()) == 700_000
    # files in and out
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.txt").write_bytes(os.urandom(600_000))
    await box.copy_in(str(src), "/tmp/")
    res = await box.exec("sh", ["-c", "wc -c < /tmp/in/a.txt"])
    assert (await res.stdout().read()).strip() == "600000"
    await box.copy_out("/tmp/in", str(tmp_path / "out"))
    assert (tmp_path / "out" / "a.txt").read_bytes() == (src / "a.txt").read_bytes()
    with pytest.raises(boxlite.BoxliteError):
        await box.copy_out("/no/such/file", str(tmp_path / "none"))

    # a box's output nobody reads stays bounded on the driver (the node and the box wait)
    flood = await within(box.exec("sh", ["-c", "head -c 50000000 /dev/zero"]), "exec of the flood")
    await asyncio.sleep(3)
    out: Any = flood._channel.stdout  # type: ignore[attr-defined]
    assert 0 < out.total <= WINDOW  # fed to the driver, unread
    await within(flood.kill(), "kill of the unread flood")
    assert (await within(flood.wait(), "exit of the killed flood")).exit_code != 0

    # transfers are size-limited per call (a driver may lower the limit)
    small = cluster.runtime(engine, max_transfer_bytes=100_000)
    capped = await small.get("w0")
    assert capped is not None
    with pytest.raises(RequestTooLargeError):
        await capped.copy_in(str(src), "/tmp/again/")
    with pytest.raises(RequestTooLargeError):
        await capped.copy_out("/tmp/in", str(tmp_path / "capped"))
    assert (await (await capped.exec("echo", ["still"])).stdout().read()).strip() == "still"

    # metrics: the box's come from its node, the runtime's add up every node's
    assert (await box.metrics()).commands_executed_total >= 4
    totals = await rt.metrics()
    assert totals.boxes_created_total >= NODES and totals.num_running_boxes == NODES

    # pause/resume, snapshots and clones happen on the box's node
    other = boxes[2]
    await other.pause()
    assert other.info().state.status == "paused"
    await other.resume()
    assert (await (await other.exec("echo", ["back"])).stdout().read()).strip() == "back"
    await other.snapshot.create("s1")
    assert [snap.name for snap in await other.snapshot.list()] == ["s1"]
    twin = await other.clone_box(name="twin")
    assert backend.node_of(twin.id) == backend.node_of(other.id)  # type: ignore[attr-defined]
    await rt.remove(twin.id, force=True)

    # another driver object reattaches by name and lists every node's boxes
    rt2 = cluster.runtime(engine)
    again = await rt2.get("w1")
    assert again is not None and again.id == boxes[1].id
    assert (await (await again.exec("echo", ["hi"])).stdout().read()).strip() == "hi"
    assert {i.id for i in await rt2.list_info()} == {b.id for b in boxes}

    for b in boxes:
        await rt.remove(b.id, force=True)
    assert await rt.list_info() == []
    await rt.shutdown()


async def test_lost_node_fails_its_boxes_only(cluster: RayCluster, busybox_rootfs: Path, engine: str) -> None:
    import ray

    rt = cluster.runtime(engine)
    boxes = await _boxes(rt, busybox_rootfs, NODES, "d")
    for b in boxes:
        assert (await (await b.exec("true")).wait()).exit_code == 0
    head_ids = {n["NodeID"] for n in ray.nodes() if n["Resources"].get("boxlite_n0")}
    victim = next(b for b in boxes if rt._backend.node_of(b.id) not in head_ids)  # type: ignore[attr-defined]
    victim_node = rt._backend.node_of(victim.id)  # type: ignore[attr-defined]
    victim_resources = next(n["Resources"] for n in ray.nodes() if n["NodeID"] == victim_node)
    # a command running on the node when it dies ends with the node's loss, not a hang
    running = await victim.exec("sleep", ["300"])
    victim_pid = victim.info().state.pid
    os.kill(cluster.raylet_pid(victim_node), signal.SIGKILL)
    start = time.monotonic()
    status = await asyncio.wait_for(running.wait(), 90)
    assert status.exit_code == -1 and victim_node in (status.error_message or "")
    with pytest.raises(BoxDiedError, match=victim_node):
        await asyncio.wait_for(victim.exec("true"), 90)
    assert time.monotonic() - start < 120
    # the box does not outlive its node service (the local runtime's lifeline)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{victim_pid}").exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert not Path(f"/proc/{victim_pid}").exists()
    lost = {i.id: i.state.status for i in await rt.list_info()}
    assert lost[victim.id] == "lost"
    for b in boxes:
        if b is not victim:
            assert lost[b.id] != "lost"
            assert (await (await b.exec("echo", ["alive"])).stdout().read()).strip() == "alive"
    for b in boxes:
        if b is not victim:
            await rt.remove(b.id, force=True)
    await rt.shutdown()

    # the node comes back (a new Ray node on the same home): the box did not outlive its runtime
    # there (not detached, auto_remove: as locally), and the new node takes boxes again
    index = next(int(k[len("boxlite_n") :]) for k in victim_resources if k.startswith("boxlite_n"))
    cluster.start_worker(index)
    later = cluster.runtime(engine)
    assert await later.get(victim.id) is None
    fresh = await _boxes(later, busybox_rootfs, NODES, "r")
    nodes = {later._backend.node_of(b.id) for b in fresh}  # type: ignore[attr-defined]
    assert len(nodes) == NODES and victim_node not in nodes
    for b in fresh:
        await later.remove(b.id, force=True)
    assert await later.list_info() == []
