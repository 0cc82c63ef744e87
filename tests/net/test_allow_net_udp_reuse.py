"""A box cannot borrow the host's UDP flows: a datagram that happens to match a connection-
tracking entry of a host flow (same source port, same destination, within the 30-120 s the entry
lingers) is still checked against the box's allow-list and the host guard, on both engines.

pasta binds a box's UDP flow to the box's own source port on the host, so box root chooses the
port: after a host process talked to 10.77.0.3:7777 from port 47001, a box sending from port
47001 to 10.77.0.3:7777 is, to conntrack, that same established flow. A private "internet"
(tests/support/privnet.py) holds two UDP echo servers, one listed, one not; the host has a UDP
echo service of its own on a second address (10.77.0.5), which no box may reach.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from support import privnet

LISTED, UNLISTED, PORT = "10.77.0.2", "10.77.0.3", 7777
HOST_PORT, BOX_PORT = 47001, 47002
HOST_SERVICE, SERVICE_PORT, SERVICE_CLIENT_PORT = "10.77.0.5", 7778, 47011


def echo_server(addr: str, port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, port))

    def serve() -> None:
        while True:
            data, peer = sock.recvfrom(2048)
            sock.sendto(b"echo:" + data[:64], peer)

    threading.Thread(target=serve, daemon=True).start()


def remote_main() -> None:
    def start() -> None:
        for addr in (LISTED, UNLISTED):
            echo_server(addr, PORT)

    privnet.when_addresses_exist(start)
    time.sleep(900)


PROBE = r"""
import json, socket, sys, time
def exchange(port, host, tag, rounds=1, pause=0.0, to=7777):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    s.settimeout(3)
    answers = []
    for i in range(rounds):
        s.sendto(tag, (host, to))
        try:
            answers.append(s.recv(100).decode())
        except OSError as e:
            answers.append(type(e).__name__)
        time.sleep(pause)
    s.close()
    return answers
if sys.argv[1] == "host-service":
    print("PROBE " + json.dumps({"borrowed": exchange(int(sys.argv[2]), "10.77.0.5", b"borrowed", to=7778)}))
    sys.exit(0)
print("PROBE " + json.dumps({
    "borrowed": exchange(int(sys.argv[1]), "10.77.0.3", b"borrowed"),
    "fresh_port": exchange(int(sys.argv[2]), "10.77.0.3", b"fresh"),
    "listed": exchange(int(sys.argv[2]) + 1, "10.77.0.2", b"listed", rounds=4, pause=0.5),
}))
"""


def host_exchange(port: int, server: tuple[str, int]) -> str:
    """A host process's UDP flow to ``server`` from ``port``: conntrack then holds an established
    entry for it after the socket is closed."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", port))
        s.settimeout(3)
        s.sendto(b"host", server)
        return s.recv(100).decode()


async def box_probe(box: Any, *args: str) -> Any:
    import json

    r = await box.exec("python3", "-c", PROBE, *args, timeout=120)
    lines = [x for x in r.stdout.splitlines() if x.startswith("PROBE ")]
    return json.loads(lines[-1][len("PROBE ") :]) if lines else (r.stdout, r.stderr)


async def probe(engine: str, rootfs: str, home: str) -> dict[str, Any]:
    import boxlite

    report: dict[str, Any] = {}
    rt = boxlite.Boxlite(boxlite.Options(home_dir=home, engine=engine))
    try:
        spec = boxlite.NetworkSpec(allow_net=[LISTED])
        async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=rt, network=spec) as box:
            report["host"] = await asyncio.to_thread(host_exchange, HOST_PORT, (UNLISTED, PORT))
            report["probe"] = await box_probe(box, str(HOST_PORT), str(BOX_PORT))
        echo_server(HOST_SERVICE, SERVICE_PORT)  # the host's own service: the host guard's to refuse
        async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=rt, network="enabled") as box:
            server = (HOST_SERVICE, SERVICE_PORT)
            report["host_service"] = await asyncio.to_thread(host_exchange, SERVICE_CLIENT_PORT, server)
            report["host_service_probe"] = await box_probe(box, "host-service", str(SERVICE_CLIENT_PORT))
    finally:
        await rt.shutdown(timeout=2)
    return report


def scenario_main(engine: str, rootfs: str, home: str) -> None:
    remote = privnet.build_internet(
        [sys.executable, __file__, "remote"],
        remote=[f"{LISTED}/24", f"{UNLISTED}/24"],
        host=["10.77.0.1/24", f"{HOST_SERVICE}/24"],
    )
    try:
        report = asyncio.run(probe(engine, rootfs, home))
    finally:
        remote.kill()
    privnet.print_report(report)


if __name__ == "__main__":
    privnet.run_main(remote_main, scenario_main)


def test_a_box_cannot_borrow_a_host_udp_flow(engine: str, python_rootfs: Path, tmp_path: Path) -> None:
    r = privnet.run_scenario(__file__, ["scenario", engine, str(python_rootfs), str(tmp_path)], timeout=600)
    assert r["host"] == "echo:host", r  # the host's own flow, which leaves the conntrack entry
    probe = r["probe"]
    assert isinstance(probe, dict), r
    # The unlisted server stays unreachable from the host flow's port as from any other.
    assert probe["borrowed"] == ["TimeoutError"], r
    assert probe["fresh_port"] == ["TimeoutError"], r
    # A listed UDP flow keeps working past its first datagram (later ones are checked too).
    assert probe["listed"] == ["echo:listed"] * 4, r
    # An unrestricted box cannot reach the host's own UDP service through a host flow either.
    assert r["host_service"] == "echo:host", r
    assert r["host_service_probe"] == {"borrowed": ["TimeoutError"]}, r
