"""Density of the namespace engine: N idle boxes, all answering exec.

    python bench/bench_density.py [--counts 50,100,200,400,1000] [--max-boxes N] [--quick] [--json out.json]

Boxes (busybox rootfs, loopback-only network) are started up to each N of the curve; after a
second of idle every box runs `true` --execs times, in shuffled order, through the library
(`Box.exec`); a box unused for $BOXLITE_SPAWNER_IDLE seconds (default 30) has retired its spawner, and
its next exec forks a new one (counted). Printed per N: exec latency p50/p99/max, and, once every box has been
idle past that, private memory (USS) per box with everything amortised over the N boxes:
the boxes' own processes (agent, keeper), the runtime's zygote, and the host process's growth
since before `import boxlite`.

It stops by itself, before the next N, when --max-boxes is reached, when MemAvailable would fall
under --min-free-mib, when pids would exceed half of kernel.pid_max, when a box fails to start,
or after --budget seconds; every box is removed at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib as bl

PROCS_PER_BOX = 3  # agent, spawner (while used), keeper


def mem_available_mib() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pid_room() -> int:
    """How many more processes fit under half of pid_max (threads count as pids)."""
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    with open("/proc/loadavg") as f:
        running = int(f.read().split()[3].split("/")[1])
    return pid_max // 2 - running


def raise_nofile() -> None:
    """Each box holds a connection in this process: lift the soft fd limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Density:
    def __init__(self, args: Any, home: Path, rootfs: Path, host_before_kib: int) -> None:
        import boxlite

        self.args, self.home, self.host_before = args, home, host_before_kib
        self.rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine="namespace"))
        self.opts = boxlite.BoxOptions(rootfs_path=str(rootfs), auto_remove=True, network="disabled")
        self.boxes: list[Any] = []
        self.stopped: str | None = None
        self.failed = False

    async def grow(self, n: int, deadline: float) -> bool:
        """Start boxes up to ``n``; False (and ``stopped`` says why) if a limit came first."""
        per_box_mib = 16.0  # generous: stop before memory runs short, not after
        while len(self.boxes) < n:
            missing = n - len(self.boxes)
            if mem_available_mib() - missing * per_box_mib < self.args.min_free_mib:
                self.stopped = f"MemAvailable would fall under {self.args.min_free_mib} MiB"
            elif pid_room() < missing * PROCS_PER_BOX:
                self.stopped = "pids would exceed half of kernel.pid_max"
            elif time.monotonic() > deadline:
                self.stopped = f"time budget of {self.args.budget:g} s spent"
            if self.stopped:
                return False
            batch = min(4, missing)
            try:
                new = await asyncio.gather(*(self._start_one() for _ in range(batch)))
            except Exception as e:  # the curve ends here, whatever the reason
                self.failed = True
                self.stopped = f"box {len(self.boxes) + 1} failed to start: {type(e).__name__}: {str(e)[:160]}"
                return False
            self.boxes += new
        return True

    async def _start_one(self) -> Any:
        box = await self.rt.create(self.opts)
        await (await box.exec("true", stdin=False)).wait()
        return box

    def memory(self) -> dict[str, float]:
        from bench_core import box_processes

        n = len(self.boxes)
        pids = [pid for b in self.boxes for pid in box_processes(self.home, b.id, b.info().state.pid or 0)]
        zygote = bl.memory_of(bl.zygotes())["uss"]
        boxes = bl.memory_of(pids + bl.zygotes())["uss"] - zygote  # with what boxes share among themselves
        host = bl.smaps_kib(os.getpid())["dirty"] - self.host_before
        return {"boxes": boxes / n / 1024, "zygote": zygote / n / 1024, "host": host / n / 1024}

    async def run(self, report: bl.Report, counts: list[int]) -> None:
        from boxlite.engines.namespace.engine import spawner_idle

        SPAWNER_IDLE = spawner_idle() or 0.0

        lat = report.section("exec `true` across N idle boxes", "library call; latency per exec")
        cold = report.section(
            "first exec `true` once each box's spawner is retired (idle past $BOXLITE_SPAWNER_IDLE)",
            "library call; latency per exec, one per box",
        )
        mem = report.section("private memory (USS) per idle box at N", "memory: zygote and host process amortised")
        deadline = time.monotonic() + self.args.budget
        try:
            for n in counts:
                t = time.perf_counter()
                if not await self.grow(n, deadline):
                    break
                grow_s = time.perf_counter() - t
                await asyncio.sleep(1.0)
                xs = await bl.exec_true_latencies(self.boxes, self.args.execs)
                await asyncio.sleep(SPAWNER_IDLE + 0.5)  # idle: each agent has retired its spawner
                m = self.memory()
                ys = await bl.exec_true_latencies(self.boxes, 1)  # each forks its spawner again
                crow = cold.add(f"N={n}", ys, "s", f"p99 {bl.percentile(ys, 99) * 1000:.1f} ms")
                row = lat.add(f"N={n}", xs, "s", f"p99 {bl.percentile(xs, 99) * 1000:.1f} ms")
                row.stats["p99"] = bl.percentile(xs, 99)
                total = m["boxes"] + m["zygote"] + m["host"]
                note = f"boxes {m['boxes']:.2f} + zygote {m['zygote']:.2f} + host {m['host']:.2f} MiB"
                mem.add(f"N={n}", {"n": n, "median": total, **{f"{k}_mib": v for k, v in m.items()}}, "MiB", note)
                print(
                    f"N={n}: started in {grow_s:.1f} s, exec p50 {row.stats['median'] * 1000:.1f} ms "
                    f"p99 {row.stats['p99'] * 1000:.1f} ms, after idle p50 {crow.stats['median'] * 1000:.1f} ms "
                    f"p99 {bl.percentile(ys, 99) * 1000:.1f} ms, {total:.2f} MiB/box",
                    file=sys.stderr,
                    flush=True,
                )
        finally:
            if self.stopped:
                lat.notes.append(f"stopped at {len(self.boxes)} boxes: {self.stopped}")
            await self.rt.shutdown(timeout=30)
        report.close(lat)
        report.close(cold)
        report.close(mem)


def main() -> int:
    host_before = bl.smaps_kib(os.getpid())["dirty"]  # see bench_core.memory_probe
    ap = bl.common_args(__doc__, runs=1, quick_runs=1)
    ap.add_argument("--counts", default=None, help="N values (default 50,100,200,400,1000; --quick: 2,4)")
    ap.add_argument("--max-boxes", type=int, default=None, help="stop before any N above this")
    ap.add_argument("--execs", type=int, default=None, help="execs per box and N (default 3; --quick 2)")
    ap.add_argument("--min-free-mib", type=int, default=2048, help="keep this much MemAvailable")
    ap.add_argument("--budget", type=float, default=1800.0, help="seconds; no new N starts after this")
    args = bl.parse(ap)
    counts = [int(x) for x in (args.counts or ("2,4" if args.quick else "50,100,200,400,1000")).split(",") if x]
    if args.max_boxes is not None:
        counts = [c for c in counts if c <= args.max_boxes] or [args.max_boxes]
    if args.execs is None:
        args.execs = 2 if args.quick else 3
    raise_nofile()
    from support.images import build_busybox_rootfs

    report = bl.Report("density (namespace engine)", args)
    report.info["counts"] = counts
    with tempfile.TemporaryDirectory(prefix="boxlite-bench-density-") as tmpdir:
        tmp = Path(tmpdir)
        rootfs = build_busybox_rootfs(tmp / "rootfs")
        density = Density(args, tmp / "home", rootfs, host_before)
        asyncio.run(density.run(report, counts))
    report.save()
    return 1 if density.failed else 0  # a limit reached is a result; a box that cannot start is not


if __name__ == "__main__":
    sys.exit(main())
