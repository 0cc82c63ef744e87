"""Pause/resume latency of a running box, per engine.

    python bench/bench_pause.py [--runs 20] [--quick] [--engines namespace,vm] [--json out.json]

For each engine, on one busybox box with a shell counting in memory:
  1. ``Box.pause()`` and ``Box.resume()`` (memory kept) as a library call: box lock, state
     database update and the engine's freeze/thaw; and the first exec after the resume;
  2. the engine's own ``freeze``/``thaw`` (namespace: cgroup freezer; VM: QMP stop/cont through
     the relay's control socket), the floor under (1) and its peer in the ratios; measured right
     after (1), on the same box;
  3. VM only: ``pause(to_disk=True)`` (guest RAM saved, QEMU ended), the resume from that file
     (a new QEMU loads it) and the saved file's size; ``fork(1)`` to the first exec in the copy;
     ``max(1, runs // 5)`` samples each (--quick: 1).
Target (issue 11): resume from a memory-kept pause <= 20 ms. Medians with min/max/IQR.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import benchlib as bl

import boxlite
from boxlite.engines.base import RunningBox
from boxlite.runtime.engines import select_engine

COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.05; done"
FLOOR = {"namespace": "cgroup freezer", "vm": "QMP stop/cont via the relay"}


async def timed(fn: Callable[[], Awaitable[object]]) -> float:
    t0 = time.perf_counter()
    await fn()
    return time.perf_counter() - t0


async def bench_engine(engine: str, rootfs: Path, runs: int, report: bl.Report) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rt = boxlite.Boxlite(boxlite.Options(home_dir=str(Path(tmp) / "home"), engine=engine))
        try:
            box = await rt.create(boxlite.BoxOptions(rootfs_path=str(rootfs), auto_remove=False))
            await box.start()
            await (await box.exec("sh", ["-c", f"({COUNTER}) </dev/null >/dev/null 2>&1 &"])).wait()
            # (1) and (2) are measured one after the other: both sections span both loops
            kind = "library call vs the engine's own call it wraps (the floor)"
            s_pause = report.section(f"pause, memory kept ({engine} engine)", kind, baseline="engine freeze")
            s_resume = report.section(f"resume, memory kept ({engine} engine)", kind, baseline="engine thaw")
            pause, resume, first_exec = [], [], []
            for _ in range(runs):
                pause.append(await timed(box.pause))
                resume.append(await timed(box.resume))
                t0 = time.perf_counter()
                await (await box.exec("true")).wait()
                first_exec.append(time.perf_counter() - t0)
            core = rt._backend.core  # type: ignore[attr-defined]
            rec = core.record(box.id)
            eng, spec = select_engine(engine), core.spec(rec)
            running = RunningBox(rec.pid or 0, rec.pid_start or 0, spec.agent_socket)
            freeze, thaw = [], []
            for _ in range(runs):
                freeze.append(await timed(lambda: eng.freeze(spec, running)))
                thaw.append(await timed(lambda: eng.thaw(spec, running)))
            s_pause.add("Box.pause()", pause, "s")
            s_pause.add("engine freeze", freeze, "s", note=FLOOR[engine])
            s_resume.add("Box.resume()", resume, "s")
            s_resume.add("engine thaw", thaw, "s", note=FLOOR[engine])
            s_resume.add("first exec after Box.resume()", first_exec, "s", note="exec of `true` alone", compare=False)
            report.close(s_pause)
            report.close(s_resume)
            if engine == "vm":
                s = report.section("pause to disk and resume from it (vm engine)", "library call; no peer")
                save, restore, sizes = [], [], []
                for _ in range(max(1, runs // 5)):
                    save.append(await timed(lambda: box.pause(to_disk=True)))
                    state = spec.run_dir / "vm-saved.state"
                    sizes.append(state.stat().st_blocks * 512 / 2**20)
                    restore.append(await timed(box.resume))
                    await (await box.exec("true")).wait()
                s.add("Box.pause(to_disk=True)", save, "s", note="guest RAM saved, QEMU ended")
                s.add("Box.resume() from the saved state", restore, "s", note="a new QEMU loads it")
                s.add("saved state file (allocated)", sizes, "MiB", compare=False)
                report.close(s)
                s = report.section("fork(1) to the first exec in the copy (vm engine)", "library call; no peer")
                fork = []
                for _ in range(max(1, runs // 5)):
                    t0 = time.perf_counter()
                    (kid,) = await box.fork(1)
                    await (await kid.exec("true")).wait()
                    fork.append(time.perf_counter() - t0)
                    await rt.remove(kid.id, force=True)
                s.add("Box.fork(1) + exec `true` in the copy", fork, "s")
                report.close(s)
            await box.stop()
            await rt.remove(box.id, force=True)
        finally:
            await rt.shutdown()


def main() -> int:
    ap = bl.common_args(__doc__, runs=20, quick_runs=2)
    ap.add_argument("--engines", default="namespace,vm", help="comma-separated: namespace, vm")
    args = bl.parse(ap)
    from support.images import build_busybox_rootfs

    report = bl.Report("pause", args)
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = build_busybox_rootfs(Path(tmp) / "rootfs")
        for engine in args.engines.split(","):
            asyncio.run(bench_engine(engine, rootfs, args.runs, report))
    report.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
