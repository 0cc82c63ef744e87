"""The cluster-wide box directory (backends/ray/directory.py) and placement on a real cluster.

* a driver process that exited leaves its detached boxes running; another driver process
  reattaches to them by name and by id;
* an output stream nobody reads is held at the window and holds neither the other stream nor the
  driver; once read, the rest follows (credit);
* pack and the per-node box limit on real nodes; two drivers racing for the last slots do not
  overshoot a node (the node service enforces its limit);
* a node that dies: a driver that never saw its boxes (only the directory did) lists them as
  ``lost``, ``get`` returns them lost, calls raise ``BoxDiedError`` naming the node, all within
  deadlines; ``remove(force=True)`` forgets a lost box; when the node comes back on the same home
  its detached box is reachable again and the boxes that did not survive are no longer listed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from raycluster import NODES, RayCluster

import boxlite
from boxlite.backends.ray.channel import WINDOW
from boxlite.errors import BoxDiedError, ResourceExhaustedError

pytestmark = [pytest.mark.namespace_only, pytest.mark.timeout(600)]

DRIVER = """
import asyncio, json, sys
import boxlite

async def main() -> None:
    rt = boxlite.cluster(sys.argv[1], engine=sys.argv[3])
    opts = boxlite.BoxOptions(rootfs_path=sys.argv[2], cpus=0.25, detach=True, auto_remove=False)
    keep = await rt.create(opts, name="keep")
    run = await keep.exec("sh", ["-c", "echo 42 > /tmp/mark"])
    assert (await run.wait()).exit_code == 0
    print(json.dumps({"id": keep.id}))

asyncio.run(main())  # no shutdown: the driver process just ends
"""


def _box(rootfs: Path, **kw: object) -> boxlite.BoxOptions:
    return boxlite.BoxOptions(rootfs_path=str(rootfs), cpus=0.25, **kw)  # type: ignore[arg-type]


async def _out(box: boxlite.Box, *argv: str) -> str:
    run = await box.exec(argv[0], list(argv[1:]))
    text = await run.stdout().read()
    assert (await run.wait()).exit_code == 0
    return text.strip()


async def test_another_driver_process_reattaches_to_detached_boxes(
    cluster: RayCluster, busybox_rootfs: Path, engine: str
) -> None:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    argv = [sys.executable, "-c", DRIVER, cluster.address, str(busybox_rootfs), engine]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    box_id = json.loads(proc.stdout.strip().splitlines()[-1])["id"]

    rt = cluster.runtime(engine)  # another driver: it never saw the box
    by_name = await rt.get("keep")
    assert by_name is not None and by_name.id == box_id and by_name.info().state.running
    assert await _out(by_name, "cat", "/tmp/mark") == "42"  # the same box, still running
    by_id = await rt.get(box_id)
    assert by_id is not None and by_id.name == "keep"
    assert {i.name for i in await rt.list_info()} == {"keep"}
    await rt.remove(box_id, force=True)
    assert await rt.get("keep") is None
    assert await rt.list_info() == []
    await rt.shutdown()


async def test_an_unread_stream_holds_neither_the_other_stream_nor_the_driver(
    cluster: RayCluster, busybox_rootfs: Path, engine: str
) -> None:
    rt = cluster.runtime(engine)
    box = await rt.create(_box(busybox_rootfs))
    try:
        # a child floods stderr while the shell writes three lines to stdout, then waits for it
        script = "( head -c 5000000 /dev/zero >&2 ) >/dev/null & for i in 1 2 3; do echo line$i; sleep 0.3; done; wait"
        run = await box.exec("sh", ["-c", script])
        seen = b""
        while b"line3" not in seen:
            chunk = await asyncio.wait_for(run._channel.stdout.read(), 30)  # type: ignore[attr-defined]
            assert chunk is not None, seen
            seen += chunk
        await asyncio.sleep(1.0)
        stderr: Any = run._channel.stderr  # type: ignore[attr-defined]
        assert 0 < stderr.total <= WINDOW  # held by the credit: the rest waits in the box
        assert len(await asyncio.wait_for(run.stderr().read_bytes(), 60)) == 5_000_000  # credit flows back
        assert await asyncio.wait_for(run.stdout().read(), 30) == ""
        assert (await asyncio.wait_for(run.wait(), 30)).exit_code == 0
    finally:
        await rt.remove(box.id, force=True)
        await rt.shutdown()


async def test_pack_and_per_node_limits_on_real_nodes(cluster: RayCluster, busybox_rootfs: Path, engine: str) -> None:
    rt = cluster.runtime(engine, strategy="pack", max_boxes_per_node=2)
    boxes = [await rt.create(_box(busybox_rootfs)) for _ in range(4)]
    per_node: dict[str | None, int] = {}
    for b in boxes:
        node = rt._backend.node_of(b.id)  # type: ignore[attr-defined]
        per_node[node] = per_node.get(node, 0) + 1
    assert sorted(per_node.values()) == [2, 2]  # packed: two full nodes, the third untouched
    boxes += [await rt.create(_box(busybox_rootfs)) for _ in range(2)]
    with pytest.raises(ResourceExhaustedError):  # 3 nodes x 2 boxes
        await rt.create(_box(busybox_rootfs))
    for b in boxes:
        await rt.remove(b.id, force=True)

    # two drivers racing for one slot per node: the nodes refuse what their limit does not allow
    a, b2 = (cluster.runtime(engine, max_boxes_per_node=1) for _ in range(2))
    results = await asyncio.gather(
        *(r.create(_box(busybox_rootfs)) for r in (a, b2, a, b2, a, b2)), return_exceptions=True
    )
    made = [r for r in results if isinstance(r, boxlite.Box)]
    assert len(made) == NODES, results
    assert all(isinstance(r, ResourceExhaustedError) for r in results if not isinstance(r, boxlite.Box))
    nodes = {a._backend.node_of(x.id) or b2._backend.node_of(x.id) for x in made}  # type: ignore[attr-defined]
    assert len(nodes) == NODES
    for x in made:
        await a.remove(x.id, force=True)
    assert await a.list_info() == []
    for r in (rt, a, b2):
        await r.shutdown()


async def test_lost_node_is_seen_by_every_driver(cluster: RayCluster, busybox_rootfs: Path, engine: str) -> None:
    import ray

    rt = cluster.runtime(engine, max_boxes_per_node=2)
    # one detached and one ordinary box on every node
    kept = [await rt.create(_box(busybox_rootfs, detach=True, auto_remove=False), name=f"kd{i}") for i in range(NODES)]
    plain = [await rt.create(_box(busybox_rootfs), name=f"kn{i}") for i in range(NODES)]
    node_of = rt._backend.node_of  # type: ignore[attr-defined]
    head_ids = {n["NodeID"] for n in ray.nodes() if n["Resources"].get("boxlite_n0")}
    victim_node = next(node_of(b.id) for b in kept if node_of(b.id) not in head_ids)
    victim_kept = next(b for b in kept if node_of(b.id) == victim_node)
    victim_plain = next(b for b in plain if node_of(b.id) == victim_node)
    kept_name, plain_name = str(victim_kept.name), str(victim_plain.name)
    resources = next(n["Resources"] for n in ray.nodes() if n["NodeID"] == victim_node)
    index = next(int(k[len("boxlite_n") :]) for k in resources if k.startswith("boxlite_n"))

    os.kill(cluster.raylet_pid(victim_node), signal.SIGKILL)
    start = time.monotonic()

    async def died() -> BoxDiedError:  # the node service may still answer for a moment
        while True:
            try:
                await (await victim_plain.exec("true")).wait()
            except BoxDiedError as e:
                return e
            await asyncio.sleep(0.5)

    assert victim_node in str(await asyncio.wait_for(died(), 90))

    # a driver that never saw these boxes: the directory tells it they were on the lost node
    other = cluster.runtime(engine)
    listed = {i.name: i.state.status for i in await asyncio.wait_for(other.list_info(), 90)}
    assert listed.keys() == {b.name for b in kept + plain}
    assert listed[kept_name] == listed[plain_name] == "lost"
    assert all(status != "lost" for name, status in listed.items() if name not in (kept_name, plain_name))
    assert sorted(str(i.name) for i in await other.list_info(state="lost")) == sorted([kept_name, plain_name])
    lost = await asyncio.wait_for(other.get(kept_name), 90)
    assert lost is not None and lost.id == victim_kept.id and lost.info().state.status == "lost"
    with pytest.raises(BoxDiedError, match=victim_node):
        await asyncio.wait_for(lost.exec("true"), 90)
    with pytest.raises(BoxDiedError, match=victim_node):
        await asyncio.wait_for(other.remove(kept_name), 90)  # without force: the node is gone
    await asyncio.wait_for(other.remove(plain_name, force=True), 90)  # force: forgotten
    assert time.monotonic() - start < 180
    names = {i.name for i in await rt.list_info()}  # also for the first driver
    assert plain_name not in names and kept_name in names
    for b in kept + plain:  # the other nodes' boxes keep working
        if node_of(b.id) != victim_node:
            assert await _out(b, "echo", "alive") == "alive"

    # the node comes back on the same home (a new Ray node id): its detached box is back, through
    # the new node; the plain box did not survive its runtime (as locally) and is listed nowhere
    cluster.start_worker(index)
    later = cluster.runtime(engine)
    back = await later.get(kept_name)
    assert back is not None and back.id == victim_kept.id
    assert back.info().state.status != "lost" and later._backend.node_of(back.id) != victim_node  # type: ignore[attr-defined]
    assert await _out(back, "echo", "back") == "back"
    statuses = {str(i.name): i.state.status for i in await later.list_info()}
    assert "lost" not in statuses.values() and plain_name not in statuses
    assert await later.get(victim_plain.id) is None
    for name in statuses:
        await later.remove(name, force=True)
    assert await later.list_info() == []
    for r in (rt, other, later):
        await r.shutdown()
