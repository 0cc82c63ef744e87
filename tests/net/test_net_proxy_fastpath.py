"""Issue 12: a namespace box's secret proxy also listens inside the box's network namespace, so the
box's port-80/443 flows skip pasta (engines/net/secretproxy.py, "Fast path"). Checked here on a
real box against a private "internet" (this file re-runs itself under ``unshare -n -m``):

* the fast path is taken (IPv4 and IPv6): a port-80 download leaves pasta's tap writes (``/proc/<pid>/io``
  ``wchar``) untouched, while the same download on port 8080 (not proxied) goes through them;
  the box's metrics still count it; a listed host still gets the secret's value;
* it does not widen what the box reaches: an address the allow-list refuses stays refused, the
  in-namespace listener connected to directly (not redirected) sends nothing anywhere, the proxy's
  first-bytes deadline still cuts a silent connection, and box root cannot delete the redirect
  (the namespace belongs to the host's user namespace: nfnetlink answers EPERM).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from support import privnet
from support.mibserver import serve

LISTED, REFUSED, LISTED6 = "10.77.0.2", "10.77.0.3", "fd77::2"
VALUE = "sk-fastpath-real-41d9"
MIB = 8


def remote_main(home: str) -> None:
    def start() -> None:
        for addr in (LISTED, REFUSED):
            serve(addr, 80, Path(home) / "remote.log")
        serve(LISTED, 8080, Path(home) / "remote.log")
        serve(LISTED6, 80, Path(home) / "remote.log")

    privnet.when_addresses_exist(start)
    time.sleep(900)


# Run in the box as root: one step per exec, so the host can read pasta's counters in between.
PROBE = r"""
import json, os, socket, struct, sys, time
step = sys.argv[1]
def get(host, port, path, extra=""):
    try:
        s = socket.create_connection((host, port), timeout=20)
        s.settimeout(20)
        s.sendall(f"GET /{path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode())
        got = 0
        while chunk := s.recv(1 << 16):
            got += len(chunk)
        return got
    except OSError as e:
        return type(e).__name__
def listeners():
    out = []
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        f = line.split()
        if f[3] == "0A" and f[1].startswith("0100007F:"):
            out.append(int(f[1].split(":")[1], 16))
    return out
def nft_delete():
    # nfnetlink batch: begin, NFT_MSG_DELTABLE ip boxlite_secrets (ack wanted), end
    try:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
    except OSError as e:
        return "socket " + type(e).__name__
    def msg(typ, flags, seq, payload):
        return struct.pack("=LHHLL", 16 + len(payload), typ, flags, seq, 0) + payload
    name = b"boxlite_secrets\0"
    attr = struct.pack("=HH", 4 + len(name), 1) + name
    attr += b"\0" * (-len(attr) % 4)
    batch = (msg(0x10, 1, 1, struct.pack("=BBH", 0, 0, socket.htons(10)))
             + msg((10 << 8) | 2, 1 | 4, 2, struct.pack("=BBH", 2, 0, 0) + attr)
             + msg(0x11, 1, 3, struct.pack("=BBH", 0, 0, socket.htons(10))))
    s.settimeout(5)
    s.send(batch)
    errors = []
    try:
        data = s.recv(65536)
        while data:
            length, typ = struct.unpack("=LH", data[:6])
            if typ == 2:
                errors.append(struct.unpack("=i", data[16:20])[0])
            data = data[length:]
    except OSError:
        pass
    return errors
r = {}
if step == "bulk80":
    r["got"] = get(sys.argv[2], 80, str(sys.argv[3]))
elif step == "bulk8080":
    r["got"] = get(sys.argv[2], 8080, str(sys.argv[3]))
elif step == "attack":
    r["refused_host"] = get(sys.argv[2], 80, "refused")
    r["listeners"] = listeners()
    direct = []
    for port in r["listeners"]:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.settimeout(15)
            ph = os.environ["BOXLITE_SECRET_API"].encode()
            s.sendall(b"GET /direct?k=" + ph + b" HTTP/1.1\r\nHost: listed.test\r\n\r\n")
            direct.append(s.recv(100).decode(errors="replace") or "closed")
        except OSError as e:
            direct.append(type(e).__name__)
    r["direct"] = direct
    r["nft_delete"] = nft_delete()
    try:
        with open("/proc/sys/net/ipv4/tcp_rmem", "w") as f:
            f.write("4096 65536 65536")
        r["sysctl"] = "written"
    except OSError as e:
        r["sysctl"] = type(e).__name__
elif step == "local":  # the box's own services on port 80 stay the box's own (not redirected)
    import threading
    srv = socket.create_server(("0.0.0.0", 80))
    def answer():
        while True:
            c, _ = srv.accept()
            c.sendall(b"own service")
            c.close()
    threading.Thread(target=answer, daemon=True).start()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.connect((sys.argv[2], 9))
    for addr in ("127.0.0.1", u.getsockname()[0]):
        with socket.create_connection((addr, 80), timeout=5) as c:
            r[addr] = c.recv(100).decode()
    for _ in range(200):  # loopback churn: must not land in the namespace's conntrack table
        with socket.create_connection(("127.0.0.1", 80), timeout=5) as c:
            c.recv(100)
    with open("/proc/sys/net/netfilter/nf_conntrack_count") as f:
        r["conntrack"] = int(f.read())
elif step == "listed":
    r["got"] = get("listed.test", 80, "0?k=" + os.environ["BOXLITE_SECRET_API"])
elif step == "silent":
    s = socket.create_connection((sys.argv[2], 80), timeout=5)
    s.settimeout(60)
    t = time.monotonic()
    try:
        s.recv(1)
    except OSError:
        pass
    r["closed_after"] = time.monotonic() - t
print("PROBE " + json.dumps(r))
"""


def pasta_writes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar")


async def box_steps(rootfs: str, home: Path) -> dict[str, Any]:
    import boxlite

    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home / "rt"), engine="namespace"))
    report: dict[str, Any] = {}
    try:
        secret = boxlite.Secret("api", VALUE, ["listed.test"])
        spec = boxlite.NetworkSpec(allow_net=[LISTED, LISTED6])
        async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=rt, secrets=[secret], network=spec) as box:
            box_dir = rt.home.boxes_dir / box.box.id
            pasta = int((box_dir / "pasta.pid").read_text().split()[0])
            await box.exec("sh", "-c", f"echo '{LISTED} listed.test' >> /etc/hosts")

            async def step(*args: str) -> dict[str, Any]:
                r = await box.exec("python3", "-c", PROBE, *args, timeout=120)
                lines = [x for x in r.stdout.splitlines() if x.startswith("PROBE ")]
                assert lines, r.stdout + r.stderr
                out: dict[str, Any] = json.loads(lines[-1][len("PROBE ") :])
                return out

            async def counted(*args: str) -> dict[str, Any]:
                before = pasta_writes(pasta)
                out = await step(*args)
                out["pasta_wchar"] = pasta_writes(pasta) - before
                return out

            before = await box.metrics()
            report["fast"] = await counted("bulk80", LISTED, str(MIB))
            await asyncio.sleep(2.5)  # the proxy writes its counts every 2 s
            after = await box.metrics()
            report["metrics_received"] = (after.network_bytes_received or 0) - (before.network_bytes_received or 0)
            report["control"] = await counted("bulk8080", LISTED, str(MIB))
            report["fast6"] = await counted("bulk80", LISTED6, str(MIB))
            report["listed"] = await step("listed")
            report["local"] = await step("local", LISTED)
            report["attack"] = await step("attack", REFUSED)
            report["fast_after_attack"] = await counted("bulk80", LISTED, str(MIB))
            report["silent"] = await step("silent", LISTED)
    finally:
        await rt.shutdown(timeout=2)
    return report


def scenario_main(home_s: str, rootfs: str) -> None:
    home = Path(home_s)
    privnet.bind_file("/etc/resolv.conf", "nameserver 10.77.0.254\n", home)  # pasta wants one
    privnet.bind_file("/etc/hosts", f"127.0.0.1 localhost\n{LISTED} listed.test\n", home)  # the proxy's lookups
    (home / "remote.log").touch()
    argv = [sys.executable, __file__, "remote", str(home)]
    remote = privnet.build_internet(
        argv, remote=[f"{LISTED}/24", f"{REFUSED}/24", f"{LISTED6}/64"], host=["10.77.0.1/24", "fd77::1/64"]
    )
    try:
        report = asyncio.run(box_steps(rootfs, home))
        report["remote_log"] = [json.loads(x) for x in (home / "remote.log").read_text().splitlines()]
    finally:
        remote.kill()
    privnet.print_report(report)


if __name__ == "__main__":
    if sys.argv[1] == "remote":
        remote_main(sys.argv[2])
    else:
        scenario_main(sys.argv[2], sys.argv[3])
    sys.exit(0)


def test_secret_proxy_fast_path(python_rootfs: Path, tmp_path: Path) -> None:
    os.environ.pop("BOXLITE_SECRET_FASTPATH", None)
    r = privnet.run_scenario(__file__, ["scenario", str(tmp_path), str(python_rootfs)], timeout=600)
    body = MIB << 20
    # Port 80 (proxied): the bytes never pass pasta's tap; port 8080 (not proxied): they all do.
    assert r["fast"]["got"] > body and r["control"]["got"] > body, r
    assert r["fast"]["pasta_wchar"] < body // 8, r
    assert r["control"]["pasta_wchar"] >= body, r
    assert r["fast6"]["got"] > body and r["fast6"]["pasta_wchar"] < body // 8, r  # IPv6 too
    # The box's network counters still see those bytes (counted by the proxy: they used its loopback).
    assert body <= r["metrics_received"] < 2 * body, r
    seen = [e for e in r["remote_log"] if e["server"] == f"{LISTED}:80"]
    assert any(f"/0?k={VALUE}" in e["request"] for e in seen), seen  # a listed host: substituted
    local = dict(r["local"])
    assert local.pop("conntrack") < 50, r["local"]  # 200 loopback connections: not tracked
    assert list(local.values()) == ["own service", "own service"], r["local"]
    a = r["attack"]
    assert not isinstance(a["refused_host"], int) or a["refused_host"] == 0, a  # the allow-list holds
    assert not [e for e in r["remote_log"] if e["server"].startswith(REFUSED)], r["remote_log"]
    assert a["listeners"] and all(d in ("closed", "ConnectionResetError") for d in a["direct"]), a
    assert not [e for e in r["remote_log"] if "/direct" in e["request"]], r["remote_log"]
    # Box root cannot touch its namespace's nftables (or sysctls): the redirect stays.
    assert a["nft_delete"] == [-1], a  # EPERM on the batch's first message: nothing applied
    assert a["sysctl"] != "written", a
    assert r["fast_after_attack"]["pasta_wchar"] < body // 8, r
    # The proxy's deadlines apply on the fast path: a silent connection is cut after ~10 s.
    assert 5 < r["silent"]["closed_after"] < 40, r


def test_the_engines_read_the_file_the_proxy_writes() -> None:
    """The proxy runs as a script (no package imports): its counters file name is repeated in
    ..net.proxystats, which the engines import instead of the proxy."""
    from boxlite.engines.net import proxystats, secretproxy

    assert proxystats.STATS_NAME == secretproxy.STATS_NAME
