"""Specialised boxes: time to a usable box and its idle memory, per engine.

    python bench/bench_special.py [--runs 3] [--quick] [--engines namespace,vm] [--kinds browser]
                                  [--json out.json]

One function per box kind (``KINDS``), each given (engine, runs, report, images dir); the
images are built before timing starts (``boxlite images build``; cached by content):
  * browser: ``BrowserBox`` entered (create + start) → first ``endpoint()`` whose CDP websocket
    answers a handshake (101) from the host; then, after 5 s idle, the private memory (USS) and
    PSS of the box's host processes (namespace: agent, Chromium, keeper, pasta; VM: QEMU and its
    helpers, i.e. the guest RAM it touched).
  * computer: ``ComputerBox`` entered (create + start + desktop session) → ``wait_until_ready()``
    → first ``screenshot()``; then the same idle memory measure (namespace: agent, Xvfb, openbox,
    x11vnc, websockify, keeper, pasta; VM: QEMU and its helpers).
VM boxes run under TCG on hosts without usable KVM: minutes per sample there (--runs applies).
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlparse

import benchlib as bl

import boxlite
from boxlite.api.browserbox import BrowserBox
from boxlite.api.computerbox import ComputerBox
from boxlite.images.recipes import ensure_recipe

IDLE_SECONDS = 5.0
ENDPOINT_TIMEOUT = {"namespace": 120.0, "vm": 1200.0}


def cdp_handshake(endpoint: str, timeout: float = 30.0) -> bool:
    """A websocket upgrade of ``endpoint`` answered with 101: the browser itself is reachable."""
    url = urlparse(endpoint)
    key = base64.b64encode(os.urandom(16)).decode()
    head = (
        f"GET {url.path} HTTP/1.1\r\nHost: {url.hostname}:{url.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    with socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=timeout) as s:
        s.sendall(head.encode())
        return s.recv(64).startswith(b"HTTP/1.1 101")


async def idle_memory(rt: boxlite.Boxlite, box: boxlite.Box, uss: list[float], pss: list[float]) -> None:
    """After ``IDLE_SECONDS`` of idling, append the box's host-side USS and PSS."""
    await asyncio.sleep(IDLE_SECONDS)
    m = box_memory(rt, box)
    uss.append(m["uss"])
    pss.append(m["pss"])


def box_memory(rt: boxlite.Boxlite, box: boxlite.Box) -> dict[str, float]:
    """USS and PSS (MiB) of the box's host processes (its PID 1 tree plus its keeper's)."""
    from bench_core import box_processes

    pids = box_processes(rt.home.root, box.id, box.info().state.pid or 0)
    mem = bl.memory_of(pids)
    return {"uss": mem["uss"] / 1024, "pss": mem["pss"] / 1024}


async def bench_browser(engine: str, runs: int, report: bl.Report, images: Path) -> None:
    rootfs = await asyncio.to_thread(ensure_recipe, "browser", images)
    ready = report.section(f"BrowserBox to a usable endpoint() ({engine} engine)", "library call; no peer")
    memory = report.section(f"BrowserBox idle memory after endpoint() ({engine} engine)", "memory; no peer")
    starts, firsts, uss, pss = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        rt = boxlite.Boxlite(boxlite.Options(home_dir=str(Path(tmp) / "home"), engine=engine))
        try:
            for _ in range(runs):
                t0 = time.perf_counter()
                async with BrowserBox(runtime=rt, rootfs_path=str(rootfs)) as bb:
                    started = time.perf_counter()
                    endpoint = await bb.endpoint(timeout=ENDPOINT_TIMEOUT[engine])
                    assert await asyncio.to_thread(cdp_handshake, endpoint), "CDP handshake refused"
                    done = time.perf_counter()
                    starts.append(started - t0)
                    firsts.append(done - t0)
                    await idle_memory(rt, bb.box, uss, pss)
        finally:
            await rt.shutdown()
    ready.add("create + start + endpoint() answering", firsts, "s", note="Chromium start, CDP gate, handshake")
    ready.add("of which create + start", starts, "s", compare=False)
    memory.add("box processes, USS", uss, "MiB", note=f"{IDLE_SECONDS:g} s after the first endpoint()")
    memory.add("box processes, PSS", pss, "MiB", compare=False)
    report.close(ready)
    report.close(memory)


async def bench_computer(engine: str, runs: int, report: bl.Report, images: Path) -> None:
    rootfs = await asyncio.to_thread(ensure_recipe, "desktop", images)
    ready = report.section(f"ComputerBox to the first screenshot() ({engine} engine)", "library call; no peer")
    memory = report.section(f"ComputerBox idle memory after screenshot() ({engine} engine)", "memory; no peer")
    starts, readies, firsts, uss, pss = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        rt = boxlite.Boxlite(boxlite.Options(home_dir=str(Path(tmp) / "home"), engine=engine))
        try:
            for _ in range(runs):
                t0 = time.perf_counter()
                async with ComputerBox(runtime=rt, rootfs_path=str(rootfs), memory=1024) as desktop:
                    started = time.perf_counter()
                    await desktop.wait_until_ready(timeout=ENDPOINT_TIMEOUT[engine])
                    ready_at = time.perf_counter()
                    shot = await desktop.screenshot()
                    assert shot["width"] > 0 and shot["data"], "empty screenshot"
                    done = time.perf_counter()
                    starts.append(started - t0)
                    readies.append(ready_at - t0)
                    firsts.append(done - t0)
                    await idle_memory(rt, desktop.box, uss, pss)
        finally:
            await rt.shutdown()
    ready.add("create + start + first screenshot()", firsts, "s", note="Xvfb, openbox, x11vnc, websockify, xwd")
    ready.add("of which create + start + wait_until_ready()", readies, "s", compare=False)
    ready.add("of which create + start", starts, "s", compare=False)
    memory.add("box processes, USS", uss, "MiB", note=f"{IDLE_SECONDS:g} s after the first screenshot()")
    memory.add("box processes, PSS", pss, "MiB", compare=False)
    report.close(ready)
    report.close(memory)


KINDS: dict[str, Callable[[str, int, bl.Report, Path], Awaitable[None]]] = {
    "browser": bench_browser,
    "computer": bench_computer,
}
"""Box kind -> its benchmark; other kinds (ComputerBox, ...) add an entry here."""


def main() -> int:
    ap = bl.common_args(__doc__, runs=3, quick_runs=1)
    ap.add_argument("--engines", default="namespace,vm", help="comma-separated: namespace, vm")
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma-separated: " + ", ".join(KINDS))
    ap.add_argument("--images", type=Path, default=Path.home() / ".boxlite" / "images", help="recipe image cache")
    args = bl.parse(ap)
    report = bl.Report("special", args)
    for kind in args.kinds.split(","):
        if kind not in KINDS:
            ap.error(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
        for engine in args.engines.split(","):
            asyncio.run(KINDS[kind](engine, args.runs, report, args.images))
    report.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
