"""A namespace box with secrets on the secret proxy's *host* path (``BOXLITE_SECRET_FASTPATH=0``,
the path VM boxes and the fast path's fallback use) reaches IPv6 port-80 servers through the
proxy: the host's redirect (an ``inet`` table) sends IPv6 flows to ``[::1]:P``, where the proxy
listens too (engines/net/secretproxy.py, ``listen_on_host``). Checked on a real box against a
private "internet" (this file re-runs itself under ``unshare -n -m``):

* the flows take the host path (a download's bytes pass pasta's tap writes, ``/proc/<pid>/io``);
* a listed host gets the secret's value over IPv6; an unlisted one is passed through unchanged;
* nothing is widened: an IPv6 address the allow-list refuses stays refused, and a host process
  connecting to the proxy's ``[::1]:P`` directly (not redirected) gets nothing sent anywhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from support import privnet
from support.mibserver import serve

LISTED6, REFUSED6 = "fd77::2", "fd77::3"
VALUE = "sk-v6-hostpath-real-7c31"
MIB = 2


def remote_main(home: str) -> None:
    def start() -> None:
        for addr in (LISTED6, REFUSED6):
            serve(addr, 80, Path(home) / "remote.log")

    privnet.when_addresses_exist(start)
    time.sleep(900)


# Run in the box: one step per exec, so the host can read pasta's counters in between.
PROBE = r"""
import json, os, socket, sys
def get(addr, host, path):
    phase, data = "connect", b""  # a stall's report says where it stalled
    try:
        s = socket.create_connection((addr, 80), timeout=60)
        s.settimeout(60)  # pasta stalled a host-path download for over 20 s once in CI (seconds below)
        phase = "send"
        s.sendall(f"GET /{path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        phase = "receive"
        while chunk := s.recv(1 << 16):
            data += chunk
        return {"status": data.split(b"\r\n")[0].decode(errors="replace"), "got": len(data)}
    except OSError as e:
        return {"error": type(e).__name__, "phase": phase, "got": len(data)}
step, addr, host = sys.argv[1:4]
path = sys.argv[4] if len(sys.argv) > 4 else "0?k=" + os.environ["BOXLITE_SECRET_API"]
print("PROBE " + json.dumps(get(addr, host, path)))
"""


def pasta_writes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar")


def direct_to_proxy() -> list[str]:
    """A host process (not redirected) sending a listed request to the proxy's ``[::1]:P``."""
    listing = subprocess.run(
        ["nft", "list", "map", "inet", "boxlite_allow", "secretports"], capture_output=True, text=True, check=True
    ).stdout
    ports = [int(p) for p in re.findall(r"\d+ : (\d+)", listing)]
    assert ports, listing
    out = []
    for port in ports:
        try:
            with socket.create_connection(("::1", port), timeout=5) as s:
                s.settimeout(15)
                s.sendall(b"GET /direct?k=<BOXLITE_SECRET:api> HTTP/1.1\r\nHost: listed6.test\r\n\r\n")
                out.append(s.recv(100).decode(errors="replace") or "closed")
        except OSError as e:
            out.append(type(e).__name__)
    return out


async def box_steps(rootfs: str, home: Path) -> dict[str, Any]:
    import boxlite

    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home / "rt"), engine="namespace"))
    report: dict[str, Any] = {}
    try:
        secret = boxlite.Secret("api", VALUE, ["listed6.test"])
        spec = boxlite.NetworkSpec(allow_net=[LISTED6])
        async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=rt, secrets=[secret], network=spec) as box:
            box_dir = rt.home.boxes_dir / box.box.id
            pasta = int((box_dir / "pasta.pid").read_text().split()[0])

            async def step(*args: str) -> dict[str, Any]:
                before, started = pasta_writes(pasta), time.monotonic()
                r = await box.exec("python3", "-c", PROBE, *args, timeout=120)
                lines = [x for x in r.stdout.splitlines() if x.startswith("PROBE ")]
                assert lines, r.stdout + r.stderr
                out: dict[str, Any] = json.loads(lines[-1][len("PROBE ") :])
                out["pasta_wchar"] = pasta_writes(pasta) - before
                out["seconds"] = round(time.monotonic() - started, 2)  # a stall shows here
                return out

            report["listed"] = await step("get", LISTED6, "listed6.test")
            report["bulk"] = await step("get", LISTED6, "unlisted.test", str(MIB))
            report["refused"] = await step("get", REFUSED6, "unlisted.test")
            report["direct"] = direct_to_proxy()
    finally:
        await rt.shutdown(timeout=2)
    return report


def scenario_main(home_s: str, rootfs: str) -> None:
    home = Path(home_s)
    os.environ["BOXLITE_SECRET_FASTPATH"] = "0"  # read at box start: this box takes the host path
    privnet.bind_file("/etc/resolv.conf", "nameserver 10.77.0.254\n", home)  # pasta wants one
    privnet.bind_file("/etc/hosts", f"127.0.0.1 localhost\n{LISTED6} listed6.test\n", home)  # the proxy's lookups
    (home / "remote.log").touch()
    argv = [sys.executable, __file__, "remote", str(home)]
    remote = privnet.build_internet(
        argv, remote=[f"{LISTED6}/64", f"{REFUSED6}/64"], host=["10.77.0.1/24", "fd77::1/64"]
    )
    try:
        report = asyncio.run(box_steps(rootfs, home))
        report["remote_log"] = [json.loads(x) for x in (home / "remote.log").read_text().splitlines()]
    finally:
        remote.kill()
    privnet.print_report(report)


if __name__ == "__main__":
    privnet.run_main(remote_main, scenario_main)


def test_secret_proxy_ipv6_host_path(python_rootfs: Path, tmp_path: Path) -> None:
    r = privnet.run_scenario(__file__, ["scenario", str(tmp_path), str(python_rootfs)], timeout=600)
    body = MIB << 20
    # The host path: the download's bytes went through pasta (no listener in the box's netns).
    assert r["bulk"].get("got", 0) > body and r["bulk"]["pasta_wchar"] >= body, r
    # A listed host over IPv6: intercepted, the value substituted upstream (the box sent a placeholder).
    assert r["listed"].get("status") == "HTTP/1.1 200 OK", r
    seen = [e["request"] for e in r["remote_log"] if e["server"] == f"{LISTED6}:80"]
    assert any(f"/0?k={VALUE}" in req for req in seen), seen
    assert any("/2 " in req and VALUE not in req for req in seen), seen  # unlisted: passed through
    # The allow-list still holds on IPv6, and a direct (not redirected) connection is served nothing.
    assert r["refused"].get("got", 0) == 0, r
    assert not [e for e in r["remote_log"] if e["server"].startswith(REFUSED6)], r["remote_log"]
    assert r["direct"] and all(d in ("closed", "ConnectionResetError") for d in r["direct"]), r
    assert not [e for e in r["remote_log"] if "/direct" in e["request"]], r["remote_log"]
