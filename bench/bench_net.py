"""Throughput and connection latency through a box's network path, with and without allow_net.

    python bench/bench_net.py [--runs 5] [--quick] [--engine namespace|vm] [--mib 256] [--json out.json]

The benchmark re-runs itself under ``unshare -n -m``: a private "internet" of network namespaces
it makes (a veth to a "remote" namespace with a bulk TCP server on 10.77.0.2:80 and a DNS server
answering ``bulk.test``), so no traffic leaves the machine. Contenders, interleaved ABCD/DCBA,
each downloading ``--mib`` MiB (default 256; --quick: 16) by one HTTP/1.1 GET with the same
Python client (it times the transfer itself: interpreter start is not counted):

  1. host loopback: client and server on 127.0.0.1 in the host namespace (the ceiling);
  2. host → remote over the veth (the same path minus the box);
  3. box, unrestricted network (pasta or slirp);
  4. box with ``allow_net=["bulk.test:80"]`` (the same helper, plus the per-box nftables chain);
  5. box with a secret for another host: its port-80 flows go through its secret proxy, which
     passes them through (splice) to the address asked for; on the namespace engine the proxy
     listens inside the box's network namespace (its "fast path": pasta is not on the way);
  6. (namespace engine) the same with the fast path off (``BOXLITE_SECRET_FASTPATH=0`` at its
     start): box → pasta → the host's redirect → the proxy, as before the fast path.

The same downloads also give CPU seconds per GiB of every process on the path (client, server
thread, and the box's pasta and secret proxy, from /proc/<pid>/stat): unlike MiB/s, that does not
depend on what else loads the machine (use --mib 64 or more: helper CPU is counted in 10 ms ticks).

Then connection latency: ``--runs`` x 20 connects (connect + one-byte reply) from the host over
the veth (the peer), then from the box in both configurations. --quick: 1 run of each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import benchlib as bl

from support import privnet  # benchlib puts tests/ on sys.path

REMOTE = "10.77.0.2"
DNS = "10.77.0.53"
BULK_PORT, PING_PORT = 80, 81
CHUNK = 1 << 16
CLK_TCK = os.sysconf("SC_CLK_TCK")
FASTPATH_ENV = "BOXLITE_SECRET_FASTPATH"  # boxlite.engines.namespace.network.FASTPATH_ENV

CLIENT = r"""
import json, socket, sys, time
host, port, mib, mode, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
out = []
if mode == "bulk":
    t, cpu = time.perf_counter(), time.process_time()
    s = socket.create_connection((host, port), timeout=30)
    s.sendall(b"GET /%d HTTP/1.1\r\nHost: %s\r\n\r\n" % (mib, host.encode()))
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    got, want = len(head.split(b"\r\n\r\n", 1)[1]), mib << 20
    while got < want:
        chunk = s.recv(1 << 16)
        if not chunk:
            break
        got += len(chunk)
    out.append(time.perf_counter() - t)
    print("CPU %.6f" % (time.process_time() - cpu))
    assert got == want and head.startswith(b"HTTP/1.1 200"), (got, want, head[:100])
else:
    for _ in range(n):
        t = time.perf_counter()
        s = socket.create_connection((host, port), timeout=30)
        s.recv(1)
        out.append(time.perf_counter() - t)
        s.close()
print("RESULT " + json.dumps(out))
"""

# --- servers (the remote namespace, and host loopback) -------------------------------------------


def bulk_server(addr: str, port: int) -> None:
    """``GET /<MiB>``: that many MiB; ``GET /cpu``: the CPU seconds the thread serving the last
    download used (its sends, and the kernel's work done in their context)."""
    srv = socket.create_server((addr, port), reuse_port=False)
    payload = b"x" * CHUNK
    last_cpu = [0.0]
    done = threading.Condition()
    active = [0]  # downloads being served: GET /cpu waits for them (the client may finish first)

    def one(conn: socket.socket) -> None:
        with conn:
            try:  # GET /<MiB> HTTP/1.1
                f = conn.makefile("rb")
                path = f.readline().split()[1][1:]
                while f.readline() not in (b"\r\n", b"\n", b""):
                    pass
                if path == b"cpu":
                    with done:
                        done.wait_for(lambda: not active[0], timeout=10)
                        body = b"%.6f" % last_cpu[0]
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                    return
                mib, cpu = int(path or b"0"), time.thread_time()
                with done:
                    active[0] += 1
                try:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (mib << 20))
                    for _ in range((mib << 20) // CHUNK):
                        conn.sendall(payload)
                finally:
                    with done:
                        active[0] -= 1
                        last_cpu[0] = time.thread_time() - cpu
                        done.notify_all()
            except (OSError, ValueError, IndexError):
                pass

    def serve() -> None:
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=one, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()


def ping_server(addr: str, port: int) -> None:
    srv = socket.create_server((addr, port))

    def serve() -> None:
        while True:
            conn, _ = srv.accept()
            with conn:
                try:
                    conn.sendall(b"!")
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()


def remote_main() -> None:
    def start() -> None:
        bulk_server(REMOTE, BULK_PORT)
        ping_server(REMOTE, PING_PORT)
        privnet.a_record_dns(DNS, REMOTE, ttl=300)

    privnet.when_addresses_exist(start)
    time.sleep(24 * 3600)


def build_internet() -> subprocess.Popen[str]:
    return privnet.build_internet([sys.executable, __file__, "remote"], remote=[f"{REMOTE}/24", f"{DNS}/24"])


def parse_result(text: str) -> list[float]:
    line = [x for x in text.splitlines() if x.startswith("RESULT ")]
    if not line:
        raise RuntimeError(f"client failed: {text[-500:]}")
    return [float(x) for x in json.loads(line[-1][len("RESULT ") :])]


def client_cpu(text: str) -> float:
    return float(next(x for x in text.splitlines() if x.startswith("CPU ")).split()[1])


def host_client(host: str, port: int, mib: int, mode: str, n: int = 1) -> tuple[list[float], str]:
    out = subprocess.run(
        [sys.executable, "-c", CLIENT, host, str(port), str(mib), mode, str(n)], capture_output=True, text=True
    )
    return parse_result(out.stdout + out.stderr), out.stdout


def server_cpu(host: str) -> float:
    """CPU seconds of the bulk server's last download (asked of the server itself)."""
    with socket.create_connection((host, BULK_PORT), timeout=10) as s:
        s.sendall(b"GET /cpu HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return float(data.split(b"\r\n\r\n", 1)[1])


def proc_cpu(pid: int) -> float:
    """utime + stime of a whole process (its exited threads included), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def path_processes(home: str, box_id: str) -> dict[str, int]:
    """The host-side processes a box's flows pass through: its pasta and, if any, its secret proxy
    (both children of the box's keeper)."""
    box = Path(home, "boxes", box_id)
    found = {"pasta": int((box / "pasta.pid").read_text().split()[0])}
    keeper = int((box / "keeper.pid").read_text().split()[0])
    for d in Path("/proc").iterdir():
        try:
            child = d.name.isdigit() and int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == keeper
            if child and b"secretproxy" in (d / "cmdline").read_bytes():
                found["secret proxy"] = int(d.name)
        except (OSError, ValueError, IndexError):
            continue
    return found


def _sum_cpu(pids: list[int]) -> float:
    total = 0.0
    for p in pids:
        with contextlib.suppress(OSError):
            total += proc_cpu(p)
    return total


def softirq_threads() -> list[int]:
    """ksoftirqd/N: the kernel's deferred network work lands there when it is not done in the
    context of the process that caused it (machine-wide: other work's share included)."""
    out = []
    for d in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if d.name.isdigit() and (d / "comm").read_text().startswith("ksoftirqd/"):
                out.append(int(d.name))
    return out


async def scenario(args: Any) -> None:
    import boxlite
    from support.images import python_rootfs

    report = bl.Report("net", args)
    rootfs = str(python_rootfs())
    bulk_server("127.0.0.1", BULK_PORT)
    with tempfile.TemporaryDirectory(prefix="boxlite-bench-net-") as home:
        rt = boxlite.Boxlite(boxlite.Options(home_dir=home, engine=args.engine))
        try:
            open_box = boxlite.SimpleBox(rootfs_path=rootfs, runtime=rt, network="enabled")
            spec = boxlite.NetworkSpec(allow_net=[f"bulk.test:{BULK_PORT}", f"bulk.test:{PING_PORT}"])
            listed_box = boxlite.SimpleBox(rootfs_path=rootfs, runtime=rt, network=spec)
            secret = boxlite.Secret("bench", "not-used-here", hosts=["elsewhere.test"])
            secret_box = boxlite.SimpleBox(rootfs_path=rootfs, runtime=rt, network="enabled", secrets=[secret])
            host_path_box = boxlite.SimpleBox(rootfs_path=rootfs, runtime=rt, network="enabled", secrets=[secret])
            async with contextlib.AsyncExitStack() as stack:
                a = await stack.enter_async_context(open_box)
                b = await stack.enter_async_context(listed_box)
                c = await stack.enter_async_context(secret_box)
                d = None
                if args.engine == "namespace":  # the fast path's comparison: the proxy on the host path
                    os.environ[FASTPATH_ENV] = "0"
                    try:
                        d = await stack.enter_async_context(host_path_box)
                    finally:
                        os.environ.pop(FASTPATH_ENV, None)

                def helpers(box: Any) -> dict[str, int]:
                    return path_processes(home, box.id) if args.engine == "namespace" else {}

                async def in_box(box: Any, host: str, port: int, mode: str, n: int = 1) -> tuple[list[float], str]:
                    r = await box.exec(
                        "python3", "-c", CLIENT, host, str(port), str(args.mib), mode, str(n), timeout=600
                    )
                    return parse_result(r.stdout + r.stderr), r.stdout

                loop = asyncio.get_running_loop()
                cpu: dict[str, list[dict[str, float]]] = {}
                ksoftirqd = softirq_threads()

                def measured(name: str, server: str, pids: dict[str, int], run: Callable[[], Any]) -> float:
                    """Run one download; note the CPU seconds each process on its path used."""
                    others = {**{k: proc_cpu(p) for k, p in pids.items()}, "ksoftirqd": _sum_cpu(ksoftirqd)}
                    times, text = run()
                    used = {"client": client_cpu(text), "server": server_cpu(server)}
                    for k, p in pids.items():
                        used[k] = proc_cpu(p) - others[k]
                    used["ksoftirqd"] = _sum_cpu(ksoftirqd) - others["ksoftirqd"]
                    cpu.setdefault(name, []).append(used)
                    return float(times[0])

                def box_bulk(box: Any, host: str) -> Callable[[], Any]:
                    return lambda: asyncio.run_coroutine_threadsafe(in_box(box, host, BULK_PORT, "bulk"), loop).result()

                # warm-up: name resolution (fills the allow-list's set), page cache, pasta flows
                await in_box(a, REMOTE, BULK_PORT, "bulk")
                await in_box(b, "bulk.test", BULK_PORT, "bulk")
                await in_box(c, REMOTE, BULK_PORT, "bulk")
                if d is not None:
                    await in_box(d, REMOTE, BULK_PORT, "bulk")
                s = report.section(
                    f"bulk HTTP download of {args.mib} MiB, one connection ({args.engine} engine)",
                    "same Python client everywhere, transfer timed by the client",
                    baseline="host loopback",
                )
                paths: dict[str, tuple[str, dict[str, int], Callable[[], Any]]] = {
                    "host loopback": ("127.0.0.1", {}, lambda: host_client("127.0.0.1", BULK_PORT, args.mib, "bulk")),
                    "host → remote (veth)": (REMOTE, {}, lambda: host_client(REMOTE, BULK_PORT, args.mib, "bulk")),
                    "box, unrestricted": (REMOTE, helpers(a), box_bulk(a, REMOTE)),
                    "box, allow_net": (REMOTE, helpers(b), box_bulk(b, "bulk.test")),
                    "box, secret proxy (pass-through)": (REMOTE, helpers(c), box_bulk(c, REMOTE)),
                }
                if d is not None:
                    paths["box, secret proxy, host path (no fast path)"] = (REMOTE, helpers(d), box_bulk(d, REMOTE))
                contenders: dict[str, Callable[[], float]] = {
                    name: functools.partial(measured, name, *path) for name, path in paths.items()
                }
                samples = await asyncio.to_thread(bl.interleaved, contenders, args.runs)
                for name, xs in samples.items():
                    s.add(name, [args.mib / x for x in xs], "MiB/s")
                s.notes.append("ratio: MiB/s of the row over host loopback's (higher is better)")
                report.close(s)

                s = report.section(
                    f"CPU seconds per GiB downloaded, every process on the path ({args.engine} engine)",
                    "the same downloads; utime+stime of each process per GiB (load-independent, unlike MiB/s)",
                    baseline="host loopback",
                )
                gib = args.mib / 1024
                for name, runs in cpu.items():
                    parts = {k: [r[k] / gib for r in runs] for k in runs[0]}
                    total = [sum(r[k] for k in r if k != "ksoftirqd") / gib for r in runs]
                    s.add(name, total, "s/GiB", note="client + server + helpers")
                    for k, xs in parts.items():
                        s.add(f"  {name}: {k}", xs, "s/GiB", compare=False)
                s.notes.append(
                    "client: the download's own process_time; server: the serving thread's thread_time (both"
                    " include the kernel's work done in their context); helpers (pasta, secret proxy):"
                    " /proc/<pid>/stat, 10 ms ticks (use --mib 64 or more); ksoftirqd: machine-wide, not in the total"
                )
                report.close(s)

                s = report.section(
                    f"TCP connect + 1-byte reply, to the remote host ({args.engine} engine)",
                    "same Python client; median over every connect",
                    baseline="host → remote (veth)",
                )
                n = args.runs * 20
                pings = await asyncio.to_thread(host_client, REMOTE, PING_PORT, 0, "ping", n)
                s.add("host → remote (veth)", pings[0], "s")
                s.add("box, unrestricted", (await in_box(a, REMOTE, PING_PORT, "ping", n))[0], "s")
                s.add("box, allow_net", (await in_box(b, "bulk.test", PING_PORT, "ping", n))[0], "s")
                report.close(s)
        finally:
            await rt.shutdown(timeout=2)
    report.save()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "remote":
        remote_main()
        return 0
    ap = bl.common_args(__doc__, runs=5, quick_runs=1)
    ap.add_argument("--engine", default="namespace", choices=("namespace", "vm"))
    ap.add_argument("--mib", type=int, default=None, help="MiB per download (default 256; --quick: 16)")
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = bl.parse(ap)
    if args.mib is None:
        args.mib = 16 if args.quick else 256
    if not args.inside:
        argv = [sys.executable, __file__, "--inside", *sys.argv[1:]]
        return subprocess.run(["unshare", "-n", "-m", *argv]).returncode
    with tempfile.TemporaryDirectory(prefix="boxlite-bench-net-etc-") as etc:
        privnet.bind_file("/etc/resolv.conf", f"nameserver {DNS}\n", Path(etc))
        remote = build_internet()
        try:
            asyncio.run(scenario(args))
        finally:
            remote.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
