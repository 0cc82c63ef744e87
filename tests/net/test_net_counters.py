"""Issue 12: a box's network counters in ``BoxMetrics`` (bytes and packets in and out; flows and
DNS names its allow-list refused, flows the host guard refused it) and in ``boxlite stats``, on
both engines.

A private "internet" (tests/support/privnet.py): this file runs itself under ``unshare -n -m``;
the remote namespace holds allowed.test (10.77.0.2), 10.77.0.3 (not allowed) and a DNS server
(10.77.0.53, every name is 10.77.0.2). The refusals are counted on the host (nftables counters
of the box's chain, its DNS proxy), so the box cannot hide or inflate them.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from support import privnet

DNS = "10.77.0.53"
REFUSED_CONNECTS, REFUSED_NAMES = 3, 2


def remote_main() -> None:
    def start() -> None:
        privnet.banner_server("10.77.0.2", 80, b"x" * 100_000)
        privnet.banner_server("10.77.0.3", 80, b"not-allowed\n")
        privnet.a_record_dns(DNS, "10.77.0.2")

    privnet.when_addresses_exist(start)
    time.sleep(900)


PROBE = """
for i in 1 2 3; do timeout 10 nc -w 3 10.77.0.3 80 </dev/null; done
timeout 10 nc -w 3 169.254.169.254 80 </dev/null
for n in one.evil.test two.evil.test; do timeout 10 nslookup $n >/dev/null 2>&1; done
sleep 4 | timeout 20 nc allowed.test 80 | wc -c
"""


PRIVATE_PROBE = "for i in 1 2 3; do timeout 10 nc -w 3 10.77.0.3 80 </dev/null; done; echo probed"


async def probe(engine: str, rootfs: str, home: str) -> dict[str, Any]:
    import boxlite

    report: dict[str, Any] = {}
    rt = boxlite.Boxlite(boxlite.Options(home_dir=home, engine=engine))
    try:
        spec = boxlite.NetworkSpec(allow_net=["allowed.test:80"])
        async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=rt, network=spec) as box:
            before = await box.metrics()
            r = await box.exec("sh", "-c", PROBE, timeout=240)
            report["downloaded"] = r.stdout.strip().splitlines()[-1:] or r.stderr
            report["probe_out"] = (r.stdout[-2000:], r.stderr[-2000:])
            deadline = time.monotonic() + 30  # the DNS proxy writes its count every 2 s (later under load)
            while True:
                await asyncio.sleep(0.5)
                after = await box.metrics()
                names = (after.network_dns_refused or 0) - (before.network_dns_refused or 0)
                if names >= REFUSED_NAMES or time.monotonic() > deadline:
                    break
            report["before"], report["after"] = before.__dict__, after.__dict__
            from boxlite.cli.stats import HEADERS, _rows

            report["stats_row"] = dict(
                zip(HEADERS, (str(c) for c in _rows([box.box], [after], None, 0)[0]), strict=True)
            )
        # Public-only: no chain rejects anything, the host guard refuses the private network.
        spec = boxlite.NetworkSpec(public_only=True)
        async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=rt, network=spec) as box:
            before = await box.metrics()
            r = await box.exec("sh", "-c", PRIVATE_PROBE, timeout=120)
            report["public_only"] = ((await box.metrics()).__dict__, before.__dict__, r.stdout[-500:], r.stderr[-500:])
        async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=rt, network="enabled") as box:
            report["open_box"] = (await box.metrics()).__dict__
    finally:
        await rt.shutdown(timeout=2)
    return report


def scenario_main(engine: str, rootfs: str, home: str) -> None:
    privnet.bind_file("/etc/resolv.conf", f"nameserver {DNS}\n", Path(home))
    remote = privnet.build_internet(
        [sys.executable, __file__, "remote"], remote=["10.77.0.2/24", "10.77.0.3/24", f"{DNS}/24"]
    )
    try:
        report = asyncio.run(probe(engine, rootfs, home))
    finally:
        remote.kill()
    privnet.print_report(report)


if __name__ == "__main__":
    privnet.run_main(remote_main, scenario_main)


def test_counters_of_an_allow_listed_box(engine: str, busybox_rootfs: Path, tmp_path: Path) -> None:
    r = privnet.run_scenario(__file__, ["scenario", engine, str(busybox_rootfs), str(tmp_path)], timeout=900)
    before, after = r["before"], r["after"]
    assert r["downloaded"] == ["100000"], r["probe_out"]
    # Bytes and packets both ways: the 100 kB download shows up in what the box received.
    assert after["network_bytes_received"] - (before["network_bytes_received"] or 0) >= 100_000, r
    assert after["network_bytes_sent"] > (before["network_bytes_sent"] or 0), r
    assert after["network_packets_received"] > (before["network_packets_received"] or 0) + 10, r
    assert after["network_packets_sent"] > (before["network_packets_sent"] or 0), r
    # Refusals, counted on the host: the three connects to an address off the list and the one
    # to the metadata address, which the host guard refuses (a SYN may be sent again: at least
    # four), the two names off the list.
    refused = after["network_connections_refused"] - before["network_connections_refused"]
    assert REFUSED_CONNECTS + 1 <= refused <= 5 * (REFUSED_CONNECTS + 1), r
    assert after["network_dns_refused"] - (before["network_dns_refused"] or 0) >= REFUSED_NAMES, r
    row = r["stats_row"]
    assert int(row["REFUSED"]) == after["network_connections_refused"] + after["network_dns_refused"], row
    assert "kB" in row["NET I/O"].split("/")[0], row
    # A public-only box: the host guard's refusals of the private network are its count.
    public_after, public_before, out, err = r["public_only"]
    assert "probed" in out, (out, err)
    public_refused = public_after["network_connections_refused"] - (public_before["network_connections_refused"] or 0)
    assert REFUSED_CONNECTS <= public_refused <= 5 * REFUSED_CONNECTS, r["public_only"]
    # A box without an allow-list has no chain of its own: nothing refused to report.
    assert r["open_box"]["network_connections_refused"] is None and r["open_box"]["network_dns_refused"] is None, r


def test_refusal_counters_parse_only_what_they_trust(tmp_path: Path) -> None:
    import os

    from boxlite.engines.net import allowlist, netcounters

    listing = {
        "nftables": [
            {"metainfo": {}},
            {"rule": {"expr": [{"match": {}}, {"counter": {"packets": 5, "bytes": 300}}, {"accept": None}]}},
            {"rule": {"expr": [{"counter": {"packets": 2, "bytes": 120}}, {"reject": {"type": "tcp reset"}}]}},
            {"rule": {"expr": [{"counter": {"packets": 1, "bytes": 60}}, {"reject": None}]}},
            {"rule": {"expr": [{"counter": {"packets": "9"}}, {"reject": None}]}},
            "junk",
        ]
    }
    assert netcounters.rejected(listing) == 3
    # No claimed group: nothing at all; a hostile stats file (not JSON, a link) is ignored.
    assert netcounters.read(tmp_path) == {}
    allowlist.gid_file(tmp_path).write_text(f"{allowlist.GID_BASE + allowlist.GID_SLOTS}\n")  # out of range
    assert netcounters.read(tmp_path) == {}
    allowlist.gid_file(tmp_path).write_text(f"{allowlist.GID_BASE}\n")
    (tmp_path / "elsewhere").write_text('{"refused": 7}')
    os.symlink(tmp_path / "elsewhere", tmp_path / "dnsproxy.stats")
    assert "net_dns_refused" not in netcounters.read(tmp_path)


@pytest.mark.parametrize("text", ["", "garbage", "Inter-|\n face |\n  lo: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n"])
def test_dev_counters_ignore_loopback_and_garbage(text: str) -> None:
    from boxlite.engines.namespace import netstats

    assert netstats.dev_counters(text) == (0, 0, 0, 0)
    eth = "Inter-|\n face |\n eth0: 1500 12 0 0 0 0 0 0 700 9 0 0 0 0 0 0\n"
    assert netstats.dev_counters(text + eth) == (700, 1500, 9, 12)


def test_stats_columns_of_a_box_without_counters() -> None:
    import boxlite
    from boxlite.cli.stats import _net_io, _refused

    m = boxlite.BoxMetrics()
    assert (_net_io(m), _refused(m)) == ("-", "-")
    m = boxlite.BoxMetrics(network_bytes_received=2500, network_bytes_sent=10, network_connections_refused=4)
    assert (_net_io(m), _refused(m)) == ("2.5kB / 10B", "4")
    json.dumps(m.__dict__)  # `boxlite stats --format json` prints these fields as they are
