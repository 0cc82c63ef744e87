"""Boxes through the cluster runtime (``boxlite.cluster``, Ray) against the local runtime, same cores.

    python bench/bench_cluster.py [--boxes 50,200] [--runs 3] [--concurrency 4] [--address HOST:PORT]
                                  [--quick] [--json out.json]

N (the number of boxes) comes from ``--boxes``, else ``BOXLITE_BENCH_CLUSTER_N`` (comma-separated),
else 50,200 (``--quick``: 3). Without ``--address`` the benchmark starts its own Ray cluster on
this machine: a head and one worker (``ray start``, one Ray CPU each, so the cluster has the same
two cores as the local runtime), each node with its own BoxLite home; it is started under a
subreaper and stopped by ending that process's tree (exactly what the cluster started).

For every N and run, the two contenders run interleaved (local then cluster, then cluster then
local, ...), each on its own N boxes (busybox rootfs, no network):
  * creation: N boxes created and started (``create`` + the first exec of ``true``),
    ``--concurrency`` at a time; throughput = N / wall time, one sample per run;
  * exec latency: ``Box.exec("true")`` + wait in each of the N boxes, shuffled, one at a time;
then the boxes are removed (not timed) and the machine gets ``SETTLE_S`` to finish the kernel's
deferred teardown before the next contender. The cluster's targets (issue 14): exec overhead <= 5 ms
per exec over local (difference of medians), creation throughput >= 80% of local.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib as bl

import boxlite
from support.hostprocs import free_port, processes_with_env
from support.reaper import Reaper

N_ENV = "BOXLITE_BENCH_CLUSTER_N"
LOCAL, CLUSTER = "local runtime", "cluster runtime (Ray, 2 nodes)"
TARGET_OVERHEAD_S = 0.005
TARGET_CREATE_RATIO = 0.8
SETTLE_S = 2.0
"""Pause after each contender's removals, so the kernel's deferred teardown of N boxes (cgroups,
namespaces) is not billed to whichever contender runs next."""


class LocalRay:
    """A two-node Ray cluster on this machine, started under a subreaper (``support/reaper.py``):
    stopping it ends that process's tree, which holds every process the cluster started."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.address = f"127.0.0.1:{free_port()}"
        self.ray = str(Path(sys.executable).with_name("ray"))
        self.reaper: Reaper | None = None

    def env(self, i: int) -> dict[str, str]:
        env = dict(os.environ, BOXLITE_HOME=str(self.work / f"node{i}"), RAY_USAGE_STATS_ENABLED="0")
        env.pop("RAY_ADDRESS", None)
        return env

    def start(self) -> None:
        common = ["--num-cpus=1", "--object-store-memory=100000000", "--node-ip-address=127.0.0.1"]
        common += ["--disable-usage-stats"]
        head = [self.ray, "start", "--head", f"--port={self.address.rsplit(':', 1)[1]}", "--include-dashboard=false"]
        head += [f"--temp-dir={self.work / 'ray'}", *common]
        worker = [self.ray, "start", f"--address={self.address}", *common]
        self.reaper = Reaper()
        for i, argv in enumerate((head, worker)):
            rc, out = self.reaper.run(argv, self.env(i))
            if rc != 0:
                raise RuntimeError(f"ray start failed: {out[-3000:]}")

    def stop(self) -> None:
        left = self.reaper.close() if self.reaper is not None else []
        left += processes_with_env(f"BOXLITE_HOME={self.work}/".encode())  # (boxes too)
        if left:
            raise RuntimeError(f"processes of the benchmark's Ray cluster outlived it: {sorted(set(left))}")


async def create_all(rt: boxlite.Boxlite, opts: boxlite.BoxOptions, n: int, concurrency: int) -> tuple[float, list]:
    """Seconds to create and start ``n`` boxes, ``concurrency`` at a time, and the boxes."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> boxlite.Box:
        async with gate:
            box = await rt.create(opts)
            status = await (await box.exec("true", stdin=False)).wait()
            if status.exit_code != 0:
                raise RuntimeError(f"first exec failed: {status}")
            return box

    t = time.perf_counter()
    boxes = await asyncio.gather(*(one() for _ in range(n)))
    return time.perf_counter() - t, list(boxes)


async def remove_all(rt: boxlite.Boxlite, boxes: list[boxlite.Box]) -> None:
    gate = asyncio.Semaphore(8)

    async def one(box: boxlite.Box) -> None:
        async with gate:
            await rt.remove(box.id, force=True)

    await asyncio.gather(*(one(b) for b in boxes))


async def bench(args: Any, counts: list[int], rootfs: Path, work: Path, address: str, report: bl.Report) -> None:
    local = boxlite.Boxlite(boxlite.Options(home_dir=str(work / "local"), engine="namespace"))
    most = max(counts)
    cluster = boxlite.cluster(address, engine="namespace", max_boxes_per_node=most, overcommit=float(most))
    opts = boxlite.BoxOptions(rootfs_path=str(rootfs), network="disabled")
    runtimes = {LOCAL: local, CLUSTER: cluster}
    try:
        await (await local.create(opts)).stop()  # warm both: first use starts zygotes, node services
        warm = await cluster.create(opts)
        await cluster.remove(warm.id, force=True)
        for n in counts:
            create = report.section(
                f"create + start N={n} boxes, {args.concurrency} at a time",
                f"library calls; throughput (boxes/s), one sample per run; target: cluster >= {TARGET_CREATE_RATIO:.0%}"
                " of local",
                baseline=LOCAL,
            )
            lat = report.section(
                f"exec `true` in each of N={n} running boxes",
                f"library call; latency per exec; target: cluster <= local + {TARGET_OVERHEAD_S * 1000:g} ms",
                baseline=LOCAL,
            )
            rates: dict[str, list[float]] = {LOCAL: [], CLUSTER: []}
            latencies: dict[str, list[float]] = {LOCAL: [], CLUSTER: []}
            for run in range(args.runs):
                for name in list(runtimes) if run % 2 == 0 else reversed(list(runtimes)):
                    rt = runtimes[name]
                    seconds, boxes = await create_all(rt, opts, n, args.concurrency)
                    try:
                        rates[name].append(n / seconds)
                        latencies[name] += await bl.exec_true_latencies(boxes)
                    finally:
                        await remove_all(rt, boxes)
                        await asyncio.sleep(SETTLE_S)  # the kernel frees the boxes' cgroups after they are gone
                    print(f"N={n} run {run} {name}: {n / seconds:.1f} boxes/s", file=sys.stderr, flush=True)
            for name in runtimes:
                create.add(name, rates[name], "boxes/s")
                row = lat.add(name, latencies[name], "s", f"p99 {bl.percentile(latencies[name], 99) * 1000:.1f} ms")
                row.stats["p99"] = bl.percentile(latencies[name], 99)
            overhead = lat.rows[1].stats["median"] - lat.rows[0].stats["median"]
            ratio = create.rows[1].stats["median"] / create.rows[0].stats["median"]
            lat.notes.append(
                f"cluster overhead per exec: {overhead * 1000:+.2f} ms (target <= {TARGET_OVERHEAD_S * 1000:g} ms): "
                + ("met" if overhead <= TARGET_OVERHEAD_S else "NOT met")
            )
            create.notes.append(
                f"cluster / local throughput: {ratio:.2f} (target >= {TARGET_CREATE_RATIO}): "
                + ("met" if ratio >= TARGET_CREATE_RATIO else "NOT met")
            )
            report.info[f"N={n}"] = {
                "exec_overhead_ms": round(overhead * 1000, 3),
                "create_throughput_ratio": round(ratio, 3),
                "targets_met": overhead <= TARGET_OVERHEAD_S and ratio >= TARGET_CREATE_RATIO,
            }
            report.close(create)
            report.close(lat)
    finally:
        await cluster.shutdown(timeout=10)
        await local.shutdown(timeout=10)


def counts_from(args: Any) -> list[int]:
    raw = args.boxes or os.environ.get(N_ENV) or ("3" if args.quick else "50,200")
    try:
        counts = [int(x) for x in raw.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"N must be comma-separated integers, not {raw!r}") from None
    if not counts or min(counts) < 1:
        raise SystemExit(f"N must be positive integers, not {raw!r}")
    return counts


def main() -> int:
    ap = bl.common_args(__doc__, runs=3, quick_runs=1)
    ap.add_argument("--boxes", default=None, help=f"N values (default ${N_ENV}, else 50,200; --quick: 3)")
    ap.add_argument("--concurrency", type=int, default=4, help="creations in flight (default 4)")
    ap.add_argument("--address", default=None, help="an existing Ray cluster (default: start one here)")
    args = bl.parse(ap)
    counts = counts_from(args)
    from support.images import build_busybox_rootfs

    report = bl.Report("cluster", args)
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="boxlite-bench-cluster-") as tmp:
        work = Path(tmp)
        rootfs = build_busybox_rootfs(work / "rootfs")
        ray_cluster = None if args.address else LocalRay(work)
        try:
            if ray_cluster is not None:
                ray_cluster.start()
            address = args.address or ray_cluster.address  # type: ignore[union-attr]
            report.info["cluster"] = {"address": address, "started_here": ray_cluster is not None}
            asyncio.run(bench(args, counts, rootfs, work, address, report))
        finally:
            with contextlib.suppress(Exception):
                import ray

                ray.shutdown()
            if ray_cluster is not None:
                ray_cluster.stop()
    report.save()
    print(json.dumps(report.info), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
