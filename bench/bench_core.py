"""Core runtime benchmark: BoxLite's namespace engine against runc, crun and bwrap, one run.

    python bench/bench_core.py [--runs 15] [--idle 32]

Measures on the same busybox root filesystem:
  * start: box create+start -> first exec result, vs `runc run`, `crun run`, `bwrap` of `true`;
  * exec round trip of `true` in a running box, vs `runc exec`;
  * idle box memory (PSS of every process of the box, from /proc/<pid>/smaps_rollup);
  * how many idle boxes stay responsive (exec round trip across N idle boxes).
Prints medians and the ratios the issue sets targets for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import boxlite  # noqa: E402
from support.images import build_busybox_rootfs  # noqa: E402


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def time_runs(argv: list[str], runs: int, cwd: str | None = None) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(argv, check=True, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out.append(time.perf_counter() - t)
    return out


def make_bundle(rootfs: Path, bundle: Path, args: list[str]) -> None:
    bundle.mkdir(parents=True, exist_ok=True)
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["root"] = {"path": str(rootfs), "readonly": True}
    spec["process"]["terminal"] = False
    spec["process"]["args"] = args
    (bundle / "config.json").write_text(json.dumps(spec))


def bench_runc(rootfs: Path, tmp: Path, runs: int) -> dict[str, float]:
    bundle = tmp / "runc-bundle"
    make_bundle(rootfs, bundle, ["true"])
    starts = []
    for i in range(runs):
        t = time.perf_counter()
        subprocess.run(["runc", "run", "-b", str(bundle), f"bench-{os.getpid()}-{i}"], check=True)
        starts.append(time.perf_counter() - t)
    sleeper = tmp / "runc-sleeper"
    make_bundle(rootfs, sleeper, ["sleep", "100000"])
    name = f"bench-exec-{os.getpid()}"
    subprocess.run(["runc", "run", "-d", "-b", str(sleeper), name], check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        execs = time_runs(["runc", "exec", name, "true"], runs)
    finally:
        subprocess.run(["runc", "delete", "-f", name], check=False)
    return {"start": median_ms(starts), "exec": median_ms(execs)}


def bench_crun(rootfs: Path, tmp: Path, runs: int) -> float | None:
    """crun refuses hybrid cgroups here; run it in a private mount ns without the v2 mount."""
    if not shutil.which("crun"):
        return None
    bundle = tmp / "crun-bundle"
    make_bundle(rootfs, bundle, ["true"])
    inner = (
        "import subprocess, sys, time, json\n"
        "s=[]\n"
        f"for i in range({runs}):\n"
        "    t=time.perf_counter()\n"
        f"    subprocess.run(['crun','run','-b','{bundle}',f'crun-{os.getpid()}-{{i}}'],check=True)\n"
        "    s.append(time.perf_counter()-t)\n"
        "print(json.dumps(s))\n"
    )
    script = "umount /sys/fs/cgroup/unified 2>/dev/null; exec " + sys.executable + " -c \"$0\""
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script, inner], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  crun failed: {proc.stderr.strip()[:200]}")
        return None
    return median_ms(json.loads(proc.stdout))


def bench_bwrap(rootfs: Path, runs: int) -> float | None:
    if not shutil.which("bwrap"):
        return None
    argv = ["bwrap", "--unshare-all", "--ro-bind", str(rootfs), "/", "--proc", "/proc", "--dev", "/dev", "true"]
    return median_ms(time_runs(argv, runs))


def box_pss_kib(pid: int) -> int:
    """PSS of ``pid`` and all its descendants (KiB)."""
    total = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += sum(int(line.split()[1]) for line in f if line.startswith("Pss:"))
            with open(f"/proc/{p}/task/{p}/children") as f:
                stack += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return total


async def bench_boxlite(rootfs: Path, home: Path, runs: int, idle: int) -> dict[str, float]:
    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine="namespace"))
    opts = boxlite.BoxOptions(rootfs_path=str(rootfs), auto_remove=True)
    warm = await rt.create(opts)  # first create imports the rootfs into the store
    await warm.start()
    await rt.remove(warm.id, force=True)
    starts = []
    for _ in range(runs):
        t = time.perf_counter()
        box = await rt.create(opts)
        execution = await box.exec("true", stdin=False)
        await execution.wait()
        starts.append(time.perf_counter() - t)
        await box.stop()
    box = await rt.create(opts)
    await box.start()
    rtts = []
    for _ in range(runs * 4):
        t = time.perf_counter()
        await (await box.exec("true", stdin=False)).wait()
        rtts.append(time.perf_counter() - t)
    await asyncio.sleep(0.5)
    pss = box_pss_kib(box.info().state.pid or 0)
    await box.stop()
    boxes = [await rt.create(opts) for _ in range(idle)]
    await asyncio.gather(*(b.start() for b in boxes))
    await asyncio.sleep(1.0)
    idle_rtts = []
    for b in boxes:
        t = time.perf_counter()
        await (await b.exec("true", stdin=False)).wait()
        idle_rtts.append(time.perf_counter() - t)
    idle_pss = statistics.median(box_pss_kib(b.info().state.pid or 0) for b in boxes)
    await rt.shutdown(timeout=5)
    return {
        "start": median_ms(starts),
        "exec": median_ms(rtts),
        "pss_mib": pss / 1024,
        "idle_boxes": idle,
        "idle_exec_p50": median_ms(idle_rtts),
        "idle_exec_max": max(idle_rtts) * 1000,
        "idle_pss_mib": idle_pss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--idle", type=int, default=32, help="idle boxes for the responsiveness check")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="boxlite-bench-") as tmpdir:
        tmp = Path(tmpdir)
        rootfs = build_busybox_rootfs(tmp / "rootfs")
        ours = asyncio.run(bench_boxlite(rootfs, tmp / "home", args.runs, args.idle))
        runc = bench_runc(rootfs, tmp, args.runs)
        crun = bench_crun(rootfs, tmp, args.runs)
        bwrap = bench_bwrap(rootfs, args.runs)
    print(f"BoxLite core benchmark (median of {args.runs} runs, busybox rootfs, namespace engine)")
    print(f"  start -> first exec result   boxlite {ours['start']:7.1f} ms")
    ratio = ours["start"] / runc["start"]
    print(f"                               runc    {runc['start']:7.1f} ms   ratio {ratio:.2f}x")
    if crun:
        ratio = ours["start"] / crun
        print(f"                               crun    {crun:7.1f} ms   ratio {ratio:.2f}x (target <= 1.5x)")
    if bwrap:
        print(f"                               bwrap   {bwrap:7.1f} ms   ratio {ours['start'] / bwrap:.2f}x")
    print(f"  exec round trip of `true`    boxlite {ours['exec']:7.2f} ms   (target < 5 ms)")
    print(f"                               runc    {runc['exec']:7.2f} ms   ratio {ours['exec'] / runc['exec']:.2f}x "
          "(target <= 1x)")  # fmt: skip
    print(f"  idle box memory (PSS)        boxlite {ours['pss_mib']:7.1f} MiB (target <= 15 MiB)")
    print(f"  {ours['idle_boxes']:.0f} idle boxes               exec p50 {ours['idle_exec_p50']:.2f} ms, "
          f"max {ours['idle_exec_max']:.2f} ms, PSS/box {ours['idle_pss_mib']:.1f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
