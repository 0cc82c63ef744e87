"""Pause/resume latency of a running box, per engine.

    python bench/bench_pause.py [--runs 20] [--engines namespace,vm] [--json out.json]

For each engine, on one busybox box with a shell counting in memory:
  1. ``Box.pause()`` and ``Box.resume()`` (memory kept) as a library call: box lock, state
     database update and the engine's freeze/thaw; and resume + the first exec after it;
  2. the engine's own ``freeze``/``thaw`` (namespace: cgroup freezer; VM: QMP stop/cont through
     the relay's control socket), the floor under (1);
  3. VM only: ``pause(to_disk=True)`` (guest RAM saved, QEMU ended), the resume from that file
     (a new QEMU loads it) and the saved file's size; ``fork(1)`` to the first exec in the copy.
Target (issue 11): resume from a memory-kept pause <= 20 ms. Medians with min/max/IQR.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib as bl

import boxlite
from boxlite.engines.base import RunningBox
from boxlite.runtime.engines import select_engine

COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.05; done"


async def timed(fn: Any) -> float:
    t0 = time.perf_counter()
    await fn()
    return (time.perf_counter() - t0) * 1000


async def bench_engine(engine: str, rootfs: Path, runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {"load_before": bl.loadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        rt = boxlite.Boxlite(boxlite.Options(home_dir=str(Path(tmp) / "home"), engine=engine))
        try:
            box = await rt.create(boxlite.BoxOptions(rootfs_path=str(rootfs), auto_remove=False))
            await box.start()
            await (await box.exec("sh", ["-c", f"({COUNTER}) </dev/null >/dev/null 2>&1 &"])).wait()
            pause_ms, resume_ms, first_exec_ms = [], [], []
            for _ in range(runs):
                pause_ms.append(await timed(box.pause))
                resume_ms.append(await timed(box.resume))
                t0 = time.perf_counter()
                await (await box.exec("true")).wait()
                first_exec_ms.append((time.perf_counter() - t0) * 1000)
            out["api_pause_ms"] = bl.summarize(pause_ms)
            out["api_resume_ms"] = bl.summarize(resume_ms)
            out["first_exec_after_resume_ms"] = bl.summarize(first_exec_ms)
            core = rt._backend.core  # type: ignore[attr-defined]
            rec = core.record(box.id)
            eng, spec = select_engine(engine), core.spec(rec)
            running = RunningBox(rec.pid or 0, rec.pid_start or 0, spec.agent_socket)
            freeze_ms, thaw_ms = [], []
            for _ in range(runs):
                freeze_ms.append(await timed(lambda: eng.freeze(spec, running)))
                thaw_ms.append(await timed(lambda: eng.thaw(spec, running)))
            out["engine_freeze_ms"] = bl.summarize(freeze_ms)
            out["engine_thaw_ms"] = bl.summarize(thaw_ms)
            if engine == "vm":
                save_ms, restore_ms, sizes = [], [], []
                for _ in range(max(1, runs // 5)):
                    save_ms.append(await timed(lambda: box.pause(to_disk=True)))
                    state = spec.run_dir / "vm-saved.state"
                    sizes.append(state.stat().st_blocks * 512 / 2**20)
                    restore_ms.append(await timed(box.resume))
                    await (await box.exec("true")).wait()
                fork_ms = []
                for _ in range(max(1, runs // 5)):
                    t0 = time.perf_counter()
                    (kid,) = await box.fork(1)
                    await (await kid.exec("true")).wait()
                    fork_ms.append((time.perf_counter() - t0) * 1000)
                    await rt.remove(kid.id, force=True)
                out["fork_to_first_exec_ms"] = bl.summarize(fork_ms)
                out["to_disk_pause_ms"] = bl.summarize(save_ms)
                out["to_disk_resume_ms"] = bl.summarize(restore_ms)
                out["saved_state_mib"] = bl.summarize(sizes)
            await box.stop()
            await rt.remove(box.id, force=True)
        finally:
            await rt.shutdown()
    out["load_after"] = bl.loadavg()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--engines", default="namespace,vm")
    ap.add_argument("--json")
    args = ap.parse_args()
    from support.images import build_busybox_rootfs

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = build_busybox_rootfs(Path(tmp) / "rootfs")
        for engine in args.engines.split(","):
            results[engine] = asyncio.run(bench_engine(engine, rootfs, args.runs))
    for engine, data in results.items():
        print(f"== {engine} (load {data['load_before']} -> {data['load_after']})")
        for key, value in data.items():
            if isinstance(value, dict) and "median" in value:
                print(f"  {key:28} median {value['median']:8.2f}  min {value['min']:8.2f}  max {value['max']:8.2f}"
                      f"  IQR {value['p25']:.2f}..{value['p75']:.2f}  (n={value['n']})")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
