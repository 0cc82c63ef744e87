"""A private "internet" for network tests and benchmarks: no traffic ever leaves the machine.

A test file re-runs itself as a script under ``unshare -n -m`` (:func:`run_scenario`). That
namespace plays the host; :func:`build_internet` gives it a veth into a second namespace (the
"remote hosts", running ``argv`` there, which prints ``ready`` once it serves) with the
addresses the test asks for and a router (10.77.0.254, fd77::fe) for the host's default route:
pasta needs an interface with a default route to use as its template. :func:`bind_file` replaces
the host's /etc/resolv.conf or /etc/hosts inside that private mount namespace only.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

TESTS_DIR = Path(__file__).resolve().parents[1]
ROUTER4, ROUTER6 = "10.77.0.254", "fd77::fe"
REPORT = "REPORT "


def sh(cmd: str) -> None:
    subprocess.run(["sh", "-ec", cmd], check=True)


def _addr_cmd(addr: str, dev: str) -> str:
    return f"ip addr add {addr} dev {dev}" + (" nodad" if ":" in addr else "") + ";"


def build_internet(
    argv: Sequence[str], remote: Sequence[str], host: Sequence[str] = ("10.77.0.1/24",)
) -> subprocess.Popen[str]:
    """Start ``argv`` under ``unshare -n`` behind a veth; ``remote``/``host``: addresses with
    prefix length for each end (IPv6 ones make an IPv6 default route too)."""
    sh("ip link set lo up; ip link add v0 type veth peer name v1")
    proc = subprocess.Popen(["unshare", "-n", *argv], stdout=subprocess.PIPE, text=True)
    # `unshare` may not have entered its namespace yet on a loaded machine: moving v1 to its pid
    # before then would leave v1 here.
    own, deadline = os.readlink("/proc/self/ns/net"), time.monotonic() + 20
    while os.readlink(f"/proc/{proc.pid}/ns/net") == own:
        assert time.monotonic() < deadline, "the remote namespace never appeared"
        time.sleep(0.01)
    v6 = any(":" in a for a in host)
    far = [*remote, f"{ROUTER4}/24", *([f"{ROUTER6}/64"] if v6 else [])]
    near = " ".join(_addr_cmd(a, "v0") for a in host)
    far_cmds = " ".join(_addr_cmd(a, "v1") for a in far)
    route6 = f"ip -6 route add default via {ROUTER6}" if v6 else ""
    sh(f"""
        ip link set v1 netns {proc.pid}
        {near}
        ip link set v0 up
        ip route add default via {ROUTER4}
        {route6}
        nsenter -t {proc.pid} -n sh -ec 'ip link set lo up; {far_cmds} ip link set v1 up'
    """)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def when_addresses_exist(start: Callable[[], None], seconds: float = 20) -> None:
    """Run ``start`` (binding servers) once the namespace has its addresses, then say ``ready``.

    :func:`build_internet` brings the veth up after adding every address: waiting for that first
    keeps ``start`` from binding some servers while later addresses are still missing (a retry
    would then find its own earlier sockets: "address already in use")."""
    deadline = time.monotonic() + seconds
    while "v1" not in subprocess.run(["ip", "-o", "link", "show", "up"], capture_output=True, text=True).stdout:
        if time.monotonic() > deadline:
            raise TimeoutError("the remote namespace's veth never came up")
        time.sleep(0.02)
    while True:
        try:
            start()
            break
        except OSError:  # the addresses are not there yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    print("ready", flush=True)


def banner_server(addr: str, port: int, text: bytes) -> None:
    """Answer every connection to ``addr:port`` with ``text`` and close it."""
    srv = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(16)

    def serve() -> None:
        while True:
            conn, _ = srv.accept()
            with conn:
                try:
                    conn.sendall(text)
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()


_private = False


def a_record_dns(addr: str, answer: str, ttl: int = 60, port_log: Path | None = None) -> None:
    """A UDP resolver on ``addr``:53 answering every A query with ``answer`` (other types: no
    records), in a daemon thread; malformed queries are ignored. ``port_log``: each query's
    source port is appended to it, a line each."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, 53))

    def serve() -> None:
        while True:
            query, peer = sock.recvfrom(4096)
            try:
                pos = 12
                while query[pos]:
                    pos += 1 + query[pos]
                qtype = struct.unpack(">H", query[pos + 1 : pos + 3])[0]
            except (IndexError, struct.error):
                continue
            if port_log is not None:
                with open(port_log, "a") as f:
                    f.write(f"{peer[1]}\n")
            record = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, ttl, 4) + socket.inet_aton(answer) if qtype == 1 else b""
            head = query[:2] + b"\x81\x80" + struct.pack(">HHHH", 1, 1 if record else 0, 0, 0)
            sock.sendto(head + query[12 : pos + 5] + record, peer)

    threading.Thread(target=serve, daemon=True).start()


def run_main(remote_main: Callable[..., None], scenario_main: Callable[..., None]) -> None:
    """The ``__main__`` of a scenario script: ``remote ARGS...`` or ``scenario ARGS...``, then exit 0."""
    if sys.argv[1] == "remote":
        remote_main(*sys.argv[2:])
    else:
        scenario_main(*sys.argv[2:5])
    sys.exit(0)


def bind_file(target: str, content: str, home: Path) -> None:
    """Replace ``target`` (e.g. /etc/resolv.conf) inside this private mount namespace."""
    global _private
    if not _private:
        subprocess.run(["mount", "--make-rprivate", "/"], check=True)
        _private = True
    src = home / ("privnet-" + target.strip("/").replace("/", "-"))
    src.write_text(content)
    subprocess.run(["mount", "--bind", str(src), target], check=True)


def print_report(report: dict[str, Any]) -> None:
    print(REPORT + json.dumps(report), flush=True)


def run_scenario(script: str, args: Sequence[str], timeout: float = 600) -> dict[str, Any]:
    """Run ``script args`` under ``unshare -n -m`` (with tests/ importable) and return the dict
    it printed with :func:`print_report`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        ["unshare", "-n", "-m", sys.executable, script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(REPORT)]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-5000:]
    result: dict[str, Any] = json.loads(lines[-1][len(REPORT) :])
    return result
