"""Issue 18.1: a box with network must not reach the host itself (loopback, the host's own
addresses, the gateway standing in for the host), while outbound traffic to other hosts, DNS
and published ports keep working. On both engines.

The test builds a private "internet" (tests never send traffic anywhere else): this file runs
itself as a script under ``unshare -n -m``. That namespace plays the host: loopback services
(one on 127.0.0.1, one on every address, a DNS resolver on 127.0.0.53 named by a private
/etc/resolv.conf), a veth with addresses 10.77.0.1 and 10.77.0.5 and a default route to
10.77.0.254. A second namespace behind the veth holds the "remote" host 10.77.0.2 and the
router 10.77.0.254. The script starts a box there and reports what the box could reach.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from support import boxnc, privnet

P_LOOPBACK, P_ANY, P_REMOTE, P_RESOLVER_OTHER, P_PUBLISHED = 7001, 7002, 7003, 7004, 7080
RESOLVER = "127.0.0.53"
REMOTE = "10.77.0.2"
HOST_ADDRS = ("10.77.0.1", "10.77.0.5")


# --- the scenario (runs inside the private namespaces) ---------------------------------------


def remote_main() -> None:
    """The remote host (its own network namespace): wait for its address, then serve."""
    privnet.when_addresses_exist(lambda: privnet.banner_server(REMOTE, P_REMOTE, b"remote-ok\n"))
    time.sleep(600)


def build_internet() -> subprocess.Popen[str]:
    argv = [sys.executable, __file__, "remote"]
    return privnet.build_internet(argv, remote=[f"{REMOTE}/24"], host=["10.77.0.1/24", "10.77.0.5/32"])


def connect(addr: str, port: int, gid: int | None = None) -> str:
    """What a host process (optionally in group ``gid``) reads from ``addr:port``."""
    code = (
        "import socket,sys\n"
        "try:\n s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=3); print(s.recv(100).decode())\n"
        "except OSError as e: print(type(e).__name__)\n"
    )

    def enter_group() -> None:
        if gid is not None:
            os.setgroups([])
            os.setresgid(gid, gid, gid)

    out = subprocess.run(
        [sys.executable, "-c", code, addr, str(port)], capture_output=True, text=True, preexec_fn=enter_group
    )
    return out.stdout.strip()


async def probe_box(engine: str, rootfs: str, home: str) -> dict[str, Any]:
    import boxlite
    from boxlite.engines.net import hostguard

    report: dict[str, Any] = {}
    rt = boxlite.Boxlite(boxlite.Options(home_dir=home, engine=engine))
    try:
        published = [(P_PUBLISHED, 8080)]
        async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=rt, network="enabled", ports=published) as box:

            async def nc(addr: str, port: int) -> str:
                r = await box.exec("sh", "-c", boxnc.nc(f"-w 3 {addr} {port}", timeout=5), timeout=20)
                return r.stdout.strip()

            gw = (await box.exec("sh", "-c", "ip route | awk '/default/ {print $3}'", timeout=10)).stdout.strip()
            report["gateway"] = gw
            report["remote"] = await nc(REMOTE, P_REMOTE)
            report["gateway_loopback_port"] = await nc(gw, P_LOOPBACK)
            report["gateway_any_port"] = await nc(gw, P_ANY)
            for addr in HOST_ADDRS:
                report[f"host_{addr}"] = await nc(addr, P_ANY)
            report["box_own_loopback"] = await nc("127.0.0.1", P_LOOPBACK)
            dns = await box.exec("cat", "/etc/resolv.conf")
            report["resolv_conf"] = dns.stdout
            nameserver = dns.stdout.split()[1]
            report["dns_other_port"] = await nc(nameserver, P_RESOLVER_OTHER)
            lookup = await box.exec("sh", "-c", "timeout 10 nslookup remote.example", timeout=20)
            report["dns_lookup"] = lookup.stdout
            server = await box.box.exec("sh", ["-c", "echo hello-from-box | nc -l -p 8080"], stdin=False)
            reply = ""
            for _ in range(100):
                reply = connect("127.0.0.1", P_PUBLISHED)
                if reply.startswith("hello"):
                    break
                await asyncio.sleep(0.1)
            report["published"] = reply
            await server.wait()
            # The rule itself: the helpers' group is what the host refuses, nothing else.
            gid = hostguard.helper_gid()
            report["guard_helper_group"] = connect("127.0.0.1", P_LOOPBACK, gid)
            report["guard_other_group"] = connect("127.0.0.1", P_LOOPBACK, 0)
            report["guard_ipv6_loopback"] = connect("::1", P_LOOPBACK, gid)
            report["guard_ipv6_other_group"] = connect("::1", P_LOOPBACK, 0)
            report["guard_resolver_other_port"] = connect(RESOLVER, P_RESOLVER_OTHER, gid)
    finally:
        await rt.shutdown(timeout=2)
    return report


def scenario_main(engine: str, rootfs: str, home: str) -> None:
    privnet.bind_file("/etc/resolv.conf", f"nameserver {RESOLVER}\n", Path(home))
    remote = build_internet()
    try:
        privnet.banner_server("127.0.0.1", P_LOOPBACK, b"loopback-secret\n")
        privnet.banner_server("0.0.0.0", P_ANY, b"host-secret\n")
        privnet.banner_server("::1", P_LOOPBACK, b"loopback6-secret\n")
        privnet.banner_server(RESOLVER, P_RESOLVER_OTHER, b"resolver-other-port\n")
        privnet.a_record_dns(RESOLVER, REMOTE)
        report = asyncio.run(probe_box(engine, rootfs, home))
    finally:
        remote.kill()
    privnet.print_report(report)


if __name__ == "__main__":
    privnet.run_main(remote_main, scenario_main)


# --- the test --------------------------------------------------------------------------------


def test_box_network_cannot_reach_the_host(engine: str, busybox_rootfs: Path, tmp_path: Path) -> None:
    r = privnet.run_scenario(__file__, ["scenario", engine, str(busybox_rootfs), str(tmp_path)])
    # Other hosts, DNS (through the host's loopback resolver) and published ports still work.
    assert r["remote"].startswith("remote-ok"), r
    assert REMOTE in r["dns_lookup"], r
    assert r["published"] == "hello-from-box", r
    # The attack: loopback-only and host services, addressed every way the box can name them.
    secrets = ("loopback-secret", "host-secret", "resolver-other-port")
    for key in ("gateway_loopback_port", "gateway_any_port", "dns_other_port", "box_own_loopback"):
        assert not r[key].startswith(secrets), (key, r)
    for addr in HOST_ADDRS:
        assert not r[f"host_{addr}"].startswith(secrets), (addr, r)
    # The guard refuses the helpers' group only; the host's own processes are untouched.
    assert r["guard_helper_group"] == "ConnectionRefusedError", r
    assert r["guard_other_group"] == "loopback-secret", r
    assert r["guard_ipv6_loopback"] == "ConnectionRefusedError", r
    assert r["guard_ipv6_other_group"] == "loopback6-secret", r
    # DNS is the one way to the host's loopback resolver, and only its port 53.
    assert r["guard_resolver_other_port"] == "ConnectionRefusedError", r


def test_guard_is_idempotent_and_only_ours() -> None:
    """Installing twice leaves one copy of our rules, in our own table only."""
    from boxlite.engines.net import hostguard

    proc = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", GUARD_TWICE], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    listing = proc.stdout
    assert listing.count("meta skgid @helpers jump helper") == 1, listing
    # lo, local, 2 link-local, 2 LAN: each to the one counted reject
    assert listing.count("goto refuse") == 6 and listing.count("reject") == 1, listing
    assert listing.count("jump helper") == 1, listing
    assert f"elements = {{ {hostguard.helper_gid()} }}" in listing, listing
    assert "table inet boxlite" in listing and listing.count("table ") == 1, listing


GUARD_TWICE = """
import subprocess
from boxlite.engines.net import hostguard
hostguard.install(); hostguard.install()
print(subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True).stdout)
"""


def test_guard_is_skipped_only_while_no_table_changed() -> None:
    """A start skips `nft` only when the ruleset generation says nothing changed since our own
    install; a flush of everything, of our chain, or anyone else's change reinstalls it."""
    proc = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", GUARD_GENERATIONS], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "first_install_is_one_transaction": True,
        "second_install_changes_nothing": True,
        "restored_after_flush_ruleset": True,
        "restored_after_flush_of_our_chain": True,
        "reinstalled_after_another_tables_change": True,
        "never_skipped_without_an_identity": True,
    }


GUARD_GENERATIONS = """
import json, subprocess
from boxlite.engines.net import hostguard, nftgen

def nft(*args):
    return subprocess.run(["nft", *args], capture_output=True, text=True, check=True).stdout

def intact():
    rules = nft("list", "table", "inet", "boxlite")
    return "meta skgid @helpers jump helper" in rules and rules.count("goto refuse") == 6

out = {}
g = nftgen.generation()
hostguard.install()
out["first_install_is_one_transaction"] = nftgen.generation() == g + 1 and intact()
g = nftgen.generation()
hostguard.install()
out["second_install_changes_nothing"] = nftgen.generation() == g and intact()
nft("flush", "ruleset")
hostguard.install()
out["restored_after_flush_ruleset"] = intact()
nft("flush", "chain", "inet", "boxlite", "helper")
hostguard.install()
out["restored_after_flush_of_our_chain"] = intact()
nft("add", "table", "inet", "someone_else")
g = nftgen.generation()
hostguard.install()
out["reinstalled_after_another_tables_change"] = nftgen.generation() == g + 1 and intact()
hostguard._identity = lambda script: None  # this boot or namespace cannot be told apart
hostguard._recorded = None
hostguard.install()
g = nftgen.generation()
hostguard.install()
out["never_skipped_without_an_identity"] = nftgen.generation() == g + 1 and intact()
print(json.dumps(out))
"""


def test_missing_nftables_is_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """No nft, no network: the box never starts without the guard."""
    import boxlite
    from boxlite.engines.net import hostguard

    monkeypatch.setattr(hostguard.shutil, "which", lambda name: None)
    monkeypatch.setattr(hostguard.os, "access", lambda path, mode: False)
    with pytest.raises(boxlite.NetworkError, match="nftables"):
        hostguard.install()
    monkeypatch.setenv("BOXLITE_NET_GID", "not-a-number")
    with pytest.raises(boxlite.NetworkError, match="BOXLITE_NET_GID"):
        hostguard.helper_gid()
