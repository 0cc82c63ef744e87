"""Boxes on a real Ray cluster of three nodes on this machine (``Boxlite.ray``).

The cluster is a head and two workers started with ``ray start`` (one CPU each, small object
stores, each node with its own BoxLite home through ``BOXLITE_HOME``). The last test kills one
worker's raylet: its boxes must fail with ``BoxDiedError`` naming the node, show as lost, and
the other nodes' boxes keep working. Teardown stops every Ray process and removes every box.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import boxlite
from boxlite.backends.ray.channel import WINDOW
from boxlite.backends.ray.node import CHUNK
from boxlite.errors import BoxDiedError, RequestTooLargeError, ResourceExhaustedError

pytestmark = [pytest.mark.namespace_only, pytest.mark.timeout(600)]

RAY = str(Path(sys.executable).with_name("ray"))
NODES = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ray_env(home: Path) -> dict[str, str]:
    env = dict(os.environ, BOXLITE_HOME=str(home), RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    return env


def _ray_pids() -> list[int]:
    """Processes of a Ray installation's binaries or workers (to check nothing outlives the test)."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            if b"site-packages/ray/" in cmd or cmd.startswith(b"ray::"):
                pids.append(int(pid))
    return pids


def _started_here(root: Path) -> list[int]:
    """Processes whose environment names a home under ``root``: Ray's and the boxes' (they inherit it)."""
    mark = f"BOXLITE_HOME={root}/".encode()
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            with contextlib.suppress(OSError):
                if mark in Path(f"/proc/{pid}/environ").read_bytes():
                    pids.append(int(pid))
    return pids


def _raylet_pid(node_id: str) -> int:
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if cmd and cmd[0].endswith(b"/raylet") and f"--node_id={node_id}".encode() in cmd:
                    return int(pid)
    raise AssertionError(f"no raylet for node {node_id}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[Path]]]:
    """``(address, homes)`` of a 3-node local Ray cluster; everything is stopped and removed after."""
    assert not _ray_pids(), "a Ray cluster is already running on this machine"
    root = tmp_path_factory.mktemp("ray")
    homes = [root / f"home{i}" for i in range(NODES)]
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus=1", "--object-store-memory=100000000", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    head = [
        RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={root / 'tmp'}",
        "--resources={\"boxlite_n0\": 1}", "--system-config={\"health_check_period_ms\": 1000, "
        "\"health_check_failure_threshold\": 3, \"health_check_timeout_ms\": 1000}", *common,
    ]  # fmt: skip
    try:
        subprocess.run(head, env=_ray_env(homes[0]), check=True, capture_output=True, timeout=180)
        for i in range(1, NODES):
            worker = [RAY, "start", f"--address={address}", f'--resources={{"boxlite_n{i}": 1}}', *common]
            subprocess.run(worker, env=_ray_env(homes[i]), check=True, capture_output=True, timeout=180)
        yield address, homes
    finally:
        with contextlib.suppress(Exception):
            import ray

            ray.shutdown()
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)
        _remove_boxes(homes)
        deadline = time.monotonic() + 30
        while (_ray_pids() or _started_here(root)) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = _ray_pids() + _started_here(root)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not left, f"Ray processes or boxes outlived the test: {left}"


def _remove_boxes(homes: list[Path]) -> None:
    """Remove every box of every node's home (their node services are gone: no box may outlive the test)."""

    async def clean(home: Path) -> None:
        rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home)))
        try:
            for info in await rt.list_info():
                with contextlib.suppress(boxlite.BoxliteError):
                    await rt.remove(info.id, force=True)
            assert await rt.list_info() == []
        finally:
            await rt.shutdown(timeout=2)

    for home in homes:
        if (home / "state.db").exists():
            asyncio.run(clean(home))


def _runtime(address: str, engine: str, **kw: object) -> boxlite.Boxlite:
    return boxlite.Boxlite.ray(address, engine=engine, call_timeout=30.0, ping_interval=2.0, ping_timeout=5.0, **kw)


async def _boxes(rt: boxlite.Boxlite, rootfs: Path, n: int, prefix: str) -> list[boxlite.Box]:
    return [await rt.create(boxlite.BoxOptions(rootfs_path=str(rootfs), cpus=1), name=f"{prefix}{i}") for i in range(n)]


async def test_boxes_spread_over_nodes_and_work(
    cluster: tuple[str, list[Path]], busybox_rootfs: Path, engine: str, tmp_path: Path
) -> None:
    address, homes = cluster
    rt = _runtime(address, engine)
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
    assert None not in pids and pids <= set(_started_here(homes[0].parent))

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
    flood = await box.exec("sh", ["-c", "head -c 50000000 /dev/zero"])
    await asyncio.sleep(3)
    out: Any = flood._channel.stdout  # type: ignore[attr-defined]
    assert 0 < out.total <= WINDOW + CHUNK  # fed to the driver, unread
    await flood.kill()
    assert (await flood.wait()).exit_code != 0

    # transfers are size-limited per call (a driver may lower the limit)
    small = _runtime(address, engine, max_transfer_bytes=100_000)
    capped = await small.get("w0")
    assert capped is not None
    with pytest.raises(RequestTooLargeError):
        await capped.copy_in(str(src), "/tmp/again/")
    with pytest.raises(RequestTooLargeError):
        await capped.copy_out("/tmp/in", str(tmp_path / "capped"))
    assert (await (await capped.exec("echo", ["still"])).stdout().read()).strip() == "still"

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
    rt2 = _runtime(address, engine)
    again = await rt2.get("w1")
    assert again is not None and again.id == boxes[1].id
    assert (await (await again.exec("echo", ["hi"])).stdout().read()).strip() == "hi"
    assert {i.id for i in await rt2.list_info()} == {b.id for b in boxes}

    for b in boxes:
        await rt.remove(b.id, force=True)
    assert await rt.list_info() == []
    await rt.shutdown()


async def test_lost_node_fails_its_boxes_only(
    cluster: tuple[str, list[Path]], busybox_rootfs: Path, engine: str
) -> None:
    address, _ = cluster
    import ray

    rt = _runtime(address, engine)
    boxes = await _boxes(rt, busybox_rootfs, NODES, "d")
    for b in boxes:
        assert (await (await b.exec("true")).wait()).exit_code == 0
    head_ids = {n["NodeID"] for n in ray.nodes() if n["Resources"].get("boxlite_n0")}
    victim = next(b for b in boxes if rt._backend.node_of(b.id) not in head_ids)  # type: ignore[attr-defined]
    victim_node = rt._backend.node_of(victim.id)  # type: ignore[attr-defined]
    # a command running on the node when it dies ends with the node's loss, not a hang
    running = await victim.exec("sleep", ["300"])
    victim_pid = victim.info().state.pid
    os.kill(_raylet_pid(victim_node), signal.SIGKILL)
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
