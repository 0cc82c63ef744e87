#!/usr/bin/env python3
"""VM engine benchmark: start -> first exec, exec round trip, idle host PSS, artifact size.

    python bench/bench_vm.py [--runs 3] [--tb-sizes 16,32,64] [--idle 5] [--fleet 4] [--json out.json]

PSS (proportional set size) charges each page to the processes mapping it in equal parts. One
box alone pays for all of QEMU's code and of the template RAM it reads; ``--fleet N`` idle
boxes share those, and ``fleet_pss_per_box_mib`` is what each one then costs.

Drives ``VmEngine`` directly on a busybox root filesystem (no registry needed). Targets under
TCG: first exec <= 1.5 s, exec round trip <= 20 ms, idle PSS <= 80 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests"), str(REPO / "tests" / "vm")]

from vmhelpers import Client, make_spec, shutdown  # noqa: E402

from boxlite import runtime_artifact  # noqa: E402
from boxlite.engines.vm import VmEngine  # noqa: E402
from boxlite.engines.vm.engine import cache_dir  # noqa: E402
from support.images import build_busybox_rootfs  # noqa: E402

TARGETS = {"first_exec_s": 1.5, "exec_rtt_ms": 20.0, "idle_pss_mib": 80.0}
FLEET_TARGET_MIB = 80.0


def _median(xs: list[float]) -> float:
    return round(statistics.median(xs), 4)


async def one_box(home: Path, rootfs: Path, name: str, tb: int | None, idle: float, rtts: int) -> dict[str, Any]:
    engine = VmEngine()
    extra: dict[str, object] = {"vm_tb_size_mib": tb} if tb else {}
    spec = make_spec(home, rootfs, name, extra=extra)
    t0 = time.monotonic()
    running = await engine.start(spec)
    t_ready = time.monotonic()
    c = await Client.connect(spec.agent_socket)
    res = await c.exec(["/bin/true"])
    t_first = time.monotonic()
    assert res.exit_code == 0
    execs, pings = [], []
    for i in range(rtts):
        t = time.monotonic()
        await c.exec(["/bin/true"], channel=10 + i)
        execs.append((time.monotonic() - t) * 1000)
        t = time.monotonic()
        await c.request(5, {"op": "ping"})
        pings.append((time.monotonic() - t) * 1000)
    await asyncio.sleep(idle)
    m = engine.metrics(spec, running)
    await c.close()
    await shutdown(spec, running, engine)
    return {
        "start_to_ready_s": round(t_ready - t0, 4),
        "first_exec_s": round(t_first - t0, 4),
        "exec_rtt_ms": _median(execs),
        "ping_rtt_ms": _median(pings),
        "idle_pss_mib": round(m.get("memory_bytes", 0) / 2**20, 1),
        "idle_qemu_pss_mib": round(m.get("qemu_pss_bytes", 0) / 2**20, 1),
        "guest_configured_s": m.get("boot_guest_configured_s"),
        "guest_ready_s": m.get("boot_guest_ready_s"),
    }


async def fleet(home: Path, rootfs: Path, count: int, idle: float) -> dict[str, Any]:
    """``count`` idle boxes at once: host PSS per box (shared pages split between them)."""
    engine = VmEngine()
    specs = [make_spec(home, rootfs, f"fleet{i}") for i in range(count)]
    running = []
    try:
        for spec in specs:
            running.append(await engine.start(spec))
            c = await Client.connect(spec.agent_socket)
            assert (await c.exec(["/bin/true"])).exit_code == 0
            await c.close()
        await asyncio.sleep(idle)
        pss = [engine.metrics(spec, r).get("memory_bytes", 0) / 2**20 for spec, r in zip(specs, running, strict=False)]
    finally:
        for spec, r in zip(specs, running, strict=False):
            await shutdown(spec, r, engine)
    return {"boxes": count, "fleet_pss_per_box_mib": round(sum(pss) / count, 1), "each_mib": [round(x, 1) for x in pss]}


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tb-sizes", default="", help="comma-separated TCG tb-size values (MiB) to compare")
    ap.add_argument("--idle", type=float, default=5.0, help="seconds to idle before measuring PSS")
    ap.add_argument("--rtts", type=int, default=20)
    ap.add_argument("--fleet", type=int, default=4, help="idle boxes run together for the per-box PSS (0: skip)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    art = runtime_artifact.locate()
    sizes = {name: (art.path / name).stat().st_size for name in ("vmlinux", "initramfs.cpio")}
    report: dict[str, Any] = {
        "artifact": {
            "path": str(art.path),
            **{f"{k}_mib": round(v / 2**20, 2) for k, v in sizes.items()},
            "total_mib": round(sum(sizes.values()) / 2**20, 2),
            "kernel": art.kernel_release,
        },
        "runs": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-vm-") as tmp:
        home = Path(tmp) / "home"
        rootfs = build_busybox_rootfs(Path(tmp) / "rootfs")
        t = time.monotonic()
        warm = await one_box(home, rootfs, "warmup", None, 0.1, 1)  # builds + caches the layer disk
        report["cold_first_exec_s"] = round(time.monotonic() - t, 3)
        report["warmup"] = warm
        for tb in [int(x) for x in args.tb_sizes.split(",") if x] or [None]:
            results = [await one_box(home, rootfs, f"b{tb}-{i}", tb, args.idle, args.rtts) for i in range(args.runs)]
            keys = results[0].keys()
            summary = {
                k: _median([float(r[k]) for r in results if r[k] is not None])
                for k in keys
                if any(r[k] is not None for r in results)
            }
            report["runs"][f"tb_size_mib={tb or 'default'}"] = {"median": summary, "all": results}
        if args.fleet:
            report["fleet"] = await fleet(home, rootfs, args.fleet, args.idle)
        report["layer_cache"] = str(cache_dir(make_spec(home, rootfs, "x")))
    print(json.dumps(report, indent=1))
    for label, run in report["runs"].items():
        med = run["median"]
        verdict = ", ".join(f"{k}={med[k]} ({'ok' if med[k] <= lim else 'over'} {lim})" for k, lim in TARGETS.items())
        print(f"{label}: {verdict}", file=sys.stderr)
    if "fleet" in report:
        per_box = report["fleet"]["fleet_pss_per_box_mib"]
        verdict = "ok" if per_box <= FLEET_TARGET_MIB else "over"
        print(f"{args.fleet} idle boxes: {per_box} MiB PSS per box ({verdict} {FLEET_TARGET_MIB})", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(asyncio.run(main()))
