"""Ray has no authentication: whoever reaches a node's Ray ports runs code on the cluster. A box
with network must not reach them (the host guard refuses a box's flows to its node's own
addresses), and BoxLite opens no listening socket of its own on a node: the node service's only
listener is its Ray core worker's (in Ray's worker port range), and a box's processes in the
node's network namespace listen on nothing.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from raycluster import RayCluster

import boxlite
from support.boxnc import nc
from support.hostprocs import process_tree

pytestmark = [pytest.mark.namespace_only, pytest.mark.timeout(600)]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""An HTTP/2 client preface: every Ray port is a gRPC server, which answers it with a SETTINGS frame."""
RAY_WORKER_PORTS = range(10002, 20000)
"""Ray's default worker port range (``ray start --min-worker-port/--max-worker-port``)."""


def host_answer(addr: str, port: int) -> int:
    with socket.create_connection((addr, port), timeout=5) as s:
        s.sendall(PREFACE)
        return len(s.recv(100))


def tcp_listeners(pid: int) -> list[tuple[str, int]]:
    """(address hex, port) of the TCP sockets ``pid`` listens on, in its network namespace."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                addr, port = fields[1].rsplit(":", 1)
                out.append((addr, int(port, 16)))
    return out


async def test_a_box_cannot_reach_its_nodes_ray_ports(cluster: RayCluster, busybox_rootfs: Path, engine: str) -> None:
    import ray

    rt = cluster.runtime(engine)
    box = await rt.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), cpus=0.25, network="enabled"))
    node_id = rt._backend.node_of(box.id)  # type: ignore[attr-defined]
    node = next(n for n in ray.nodes() if n["NodeID"] == node_id)
    addr = node["NodeManagerAddress"]
    ports = {
        "GCS": int(cluster.address.rsplit(":", 1)[1]),
        "raylet": int(node["NodeManagerPort"]),
        "object manager": int(node["ObjectManagerPort"]),
    }
    for name, port in ports.items():  # from the node itself they answer: the probe can tell
        assert host_answer(addr, port) > 0, name

    async def sh(script: str) -> str:
        run = await box.exec("sh", ["-c", script])
        out = await run.stdout().read()
        await run.wait()
        return out.strip()

    # the probe works inside the box (its own loopback answers)
    assert await sh("(echo hi | nc -l -p 9000 &) ; sleep 1; " + nc("-w 3 127.0.0.1 9000")) == "hi"
    # All at once; stdin stays open 4 s after the preface (busybox nc stops reading when it ends).
    preface = "printf 'PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n'; sleep 4"
    probe = "echo {port}=$( ({preface}) | timeout 8 nc -w 3 {addr} {port} | wc -c | tr -d ' ') &"
    probes = [probe.format(preface=preface, addr=addr, port=port) for port in ports.values()]
    got = dict(line.split("=") for line in (await sh(" ".join(probes) + " wait")).split())
    for name, port in ports.items():
        assert got[str(port)] == "0", f"a box reached the {name} port {addr}:{port}"
    await rt.remove(box.id, force=True)
    await rt.shutdown()


async def test_node_services_and_boxes_open_no_listener_of_their_own(
    cluster: RayCluster, busybox_rootfs: Path, engine: str
) -> None:
    rt = cluster.runtime(engine)
    boxes = [
        await rt.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), cpus=0.25, network="enabled"))
        for _ in range(3)
    ]
    for b in boxes:
        assert (await (await b.exec("true")).wait()).exit_code == 0
    host_net = os.readlink("/proc/self/ns/net")
    homes = {}
    for b in boxes:
        node_id = rt._backend.node_of(b.id)  # type: ignore[attr-defined]
        hello = await rt._backend._service(node_id).call_raw("hello")  # type: ignore[attr-defined]
        listeners = tcp_listeners(int(hello["pid"]))
        assert len(listeners) == 1 and listeners[0][1] in RAY_WORKER_PORTS, listeners  # Ray's core worker only
        homes[b.id] = Path(hello["home"])
    assert len(set(homes.values())) == 3  # one box per node
    for b in boxes:
        pid = b.info().state.pid
        keeper = int((homes[b.id] / "boxes" / b.id / "keeper.pid").read_text().split()[0])
        assert pid
        in_host_net = [
            p for p in process_tree(pid) + process_tree(keeper) if os.readlink(f"/proc/{p}/ns/net") == host_net
        ]
        assert in_host_net  # the keeper and the network helper live there: the check looks at something
        for p in in_host_net:
            assert tcp_listeners(p) == [], p
        await rt.remove(b.id, force=True)
    await rt.shutdown()
