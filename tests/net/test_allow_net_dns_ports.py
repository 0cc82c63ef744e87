"""An allow-listed box's DNS lookups keep working however many it makes, on both engines.

The box's DNS proxy asks the resolver from a new UDP socket per query; each leaves a conntrack
entry (not redirected) for ~30 s. A later lookup of the box from the same source port to the same
resolver matched such an entry, skipped the redirect to the proxy and was refused: about one
lookup in a hundred of a busy box failed after glibc's 10 s of retries. The proxy now asks from
ports above every box's and the host's ephemeral range (``allowlist.upstream_ports``), and a box's
DNS from those ports is refused. A private "internet" (tests/support/privnet.py): the resolver
10.77.0.53 answers every A query with 10.77.0.2 and logs the source port of each query it gets.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from support import privnet

pytestmark = pytest.mark.slow  # run early: tests/conftest.py orders slow files first

DNS, ANSWER = "10.77.0.53", "10.77.0.2"
LOOKUPS = 400
BOX_PORT, PROXY_RANGE_PORT = 40000, 62000


def remote_main(log: str) -> None:
    privnet.when_addresses_exist(lambda: privnet.a_record_dns(DNS, ANSWER, ttl=300, port_log=Path(log)))
    time.sleep(900)


PROBE = r"""
import json, os, socket, struct, sys, time
n, box_port, proxy_port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
r = {"failures": [], "slowest": 0.0}
for i in range(n):
    t = time.monotonic()
    try:
        socket.getaddrinfo("many.test", 80, socket.AF_INET, socket.SOCK_STREAM)
    except OSError as e:
        r["failures"].append([i, str(e)])
    r["slowest"] = max(r["slowest"], time.monotonic() - t)
with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
    r["port_range"] = f.read().split()
server = next(line.split()[1] for line in open("/etc/resolv.conf") if line.startswith("nameserver"))
def ask(port):
    query = os.urandom(2) + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04many\x04test\x00\x00\x01\x00\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", port))
        s.settimeout(3)
        s.sendto(query, (server, 53))
        try:
            resp = s.recv(512)
        except OSError as e:
            return type(e).__name__
        return "rcode=%d answers=%d" % (resp[3] & 15, struct.unpack(">H", resp[6:8])[0])
r["from_box_port"], r["from_proxy_port"] = ask(box_port), ask(proxy_port)
print("PROBE " + json.dumps(r))
"""


async def probe(engine: str, rootfs: str, home: str) -> dict[str, Any]:
    import json

    import boxlite

    rt = boxlite.Boxlite(boxlite.Options(home_dir=home, engine=engine))
    try:
        spec = boxlite.NetworkSpec(allow_net=["many.test:80"])
        async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=rt, network=spec) as box:
            t = time.monotonic()
            args = [str(LOOKUPS), str(BOX_PORT), str(PROXY_RANGE_PORT)]
            r = await box.exec("python3", "-c", PROBE, *args, timeout=600)
            lines = [x for x in r.stdout.splitlines() if x.startswith("PROBE ")]
            report: dict[str, Any] = json.loads(lines[-1][len("PROBE ") :]) if lines else {"out": r.stdout + r.stderr}
            report["seconds"] = time.monotonic() - t
    finally:
        await rt.shutdown(timeout=2)
    return report


def scenario_main(engine: str, rootfs: str, home: str) -> None:
    from boxlite.engines.net import allowlist

    privnet.bind_file("/etc/resolv.conf", f"nameserver {DNS}\n", Path(home))
    log = Path(home) / "ports.log"
    log.touch()
    remote = privnet.build_internet([sys.executable, __file__, "remote", str(log)], remote=[f"{DNS}/24"])
    try:
        report = asyncio.run(probe(engine, rootfs, home))
    finally:
        remote.kill()
    report["upstream_ports"] = allowlist.upstream_ports()
    report["asked_from"] = sorted({int(p) for p in log.read_text().split()})
    privnet.print_report(report)


if __name__ == "__main__":
    privnet.run_main(remote_main, scenario_main)


def test_many_lookups_of_an_allow_listed_box_all_succeed(engine: str, python_rootfs: Path, tmp_path: Path) -> None:
    r = privnet.run_scenario(__file__, ["scenario", engine, str(python_rootfs), str(tmp_path)], timeout=900)
    assert "failures" in r, r
    assert r["failures"] == [] and r["slowest"] < 5, r
    # The proxy asked upstream only from its own ports, above every box's and the host's range.
    low, high = r["upstream_ports"]
    assert low == 61000 and high == 65535, r  # this namespace's range is the kernel's default
    assert r["asked_from"] and all(low <= p <= high for p in r["asked_from"]), r["asked_from"][:20]
    assert r["from_box_port"] == "rcode=0 answers=1", r
    if engine == "namespace":  # pasta keeps the box's source port (slirp picks a host port)
        assert r["port_range"] == ["32768", "60999"], r
        assert r["from_proxy_port"] != "rcode=0 answers=1", r  # refused: those ports are the proxies'
