"""Snapshot, clone, export and import of a box that wrote 200 MB, against copying its directory.

    python bench/bench_state.py [--runs 5] [--mib 200] [--engines namespace,vm] [--json out.json] [--quick]

Each run prepares a fresh stopped box whose writable layer holds ``--mib`` MB of random data
(a clone of one base box, then the write; not timed), then times ``box.snapshot.create`` first
(it freezes that layer; the target: <= 50 ms whatever the size) and the rest in an order
rotated per run:
  * ``box.clone_box()`` of the stopped box;
  * ``box.export`` (uncompressed, image included) and ``Boxlite.import_box`` of that archive;
  * the peers on the same box directory: ``cp -a --reflink=auto`` (ext4 here: a full copy),
    ``tar -S -cf`` of it (sparse files stay sparse) and ``tar -xf`` of that tar.
Medians with min/max/IQR (milliseconds); the 1-minute load before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import benchlib as bl

import boxlite


def run_ms(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - t0) * 1000


async def timed(coro: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = await coro
    return (time.perf_counter() - t0) * 1000, result


async def sh(box: boxlite.Box, script: str) -> None:
    execution = await box.exec("sh", ["-c", script], stdin=False)
    status = await execution.wait()
    if status.exit_code != 0:
        raise RuntimeError(f"{script!r} failed: {status}")


async def bench_engine(engine: str, rootfs: Path, runs: int, mib: int, work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"load_before": bl.loadavg(), "mib_written": mib}
    samples: dict[str, list[float]] = {}
    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(work / "home"), engine=engine))
    try:
        base = await rt.create(boxlite.BoxOptions(rootfs_path=str(rootfs), auto_remove=False), name="base")
        await base.start()
        await base.stop()
        for i in range(runs):
            box = await base.clone_box(name=f"b{i}")
            await sh(box, f"head -c {mib << 20} /dev/urandom > /root/data; sync")
            await box.stop()
            box_dir = rt.home.box_dir(box.id)
            scratch = work / f"run{i}"
            scratch.mkdir()

            async def snapshot(b: boxlite.Box = box) -> None:
                samples.setdefault("snapshot create", []).append((await timed(b.snapshot.create(name="s")))[0])

            async def clone(b: boxlite.Box = box, n: int = i) -> None:
                ms, copy = await timed(b.clone_box(name=f"c{n}"))
                samples.setdefault("clone (stopped box)", []).append(ms)
                await rt.remove(copy.id, force=True)

            async def export_import(b: boxlite.Box = box, s: Path = scratch, n: int = i) -> None:
                ms, path = await timed(b.export(dest=str(s / "box.boxlite")))
                samples.setdefault("export (.boxlite, uncompressed)", []).append(ms)
                ms2, copy = await timed(rt.import_box(path, name=f"i{n}"))
                samples.setdefault("import", []).append(ms2)
                samples.setdefault("export + import", []).append(ms + ms2)
                out.setdefault("archive_mib", []).append(Path(path).stat().st_size / 2**20)
                await rt.remove(copy.id, force=True)
                Path(path).unlink()

            async def peers(d: Path = box_dir, s: Path = scratch) -> None:
                cp = run_ms(["cp", "-a", "--reflink=auto", str(d), str(s / "cp")])
                samples.setdefault("peer: cp -a --reflink=auto of the box dir", []).append(cp)
                tar_c = run_ms(["tar", "-S", "-cf", str(s / "box.tar"), "-C", str(d), "."])
                (s / "untar").mkdir()
                tar_x = run_ms(["tar", "-xf", str(s / "box.tar"), "-C", str(s / "untar")])
                samples.setdefault("peer: tar -S -cf of the box dir", []).append(tar_c)
                samples.setdefault("peer: tar -xf of that tar", []).append(tar_x)
                samples.setdefault("peer: tar -S -cf + tar -xf", []).append(tar_c + tar_x)
                shutil.rmtree(s / "cp")
                shutil.rmtree(s / "untar")
                (s / "box.tar").unlink()

            # the snapshot first: it freezes the written layer (a clone would too, then the snapshot
            # would only name it); the others in an order rotated per run
            others: list[Callable[[], Awaitable[None]]] = [peers, export_import, clone]
            for step in [snapshot, *others[i % 3 :], *others[: i % 3]]:
                await step()
            await rt.remove(box.id, force=True)
            shutil.rmtree(scratch)
    finally:
        await rt.shutdown()
    out.update({name: bl.summarize(values) for name, values in samples.items()})
    out["load_after"] = bl.loadavg()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mib", type=int, default=200)
    ap.add_argument("--engines", default="namespace")
    ap.add_argument("--json")
    ap.add_argument("--quick", action="store_true", help="1 run, 8 MB (a smoke test: the figures mean nothing)")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.mib = 1, 8
    from support.images import build_busybox_rootfs

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        rootfs = build_busybox_rootfs(Path(tmp) / "rootfs")
        for engine in args.engines.split(","):
            work = Path(tmp) / engine
            work.mkdir()
            results[engine] = asyncio.run(bench_engine(engine, rootfs, args.runs, args.mib, work))
    for engine, data in results.items():
        print(f"== {engine}: {data['mib_written']} MB written (load {data['load_before']} -> {data['load_after']})")
        for key, value in data.items():
            if isinstance(value, dict) and "median" in value:
                print(f"  {key:44} median {value['median']:9.1f}  min {value['min']:9.1f}  max {value['max']:9.1f}"
                      f"  IQR {value['p25']:.1f}..{value['p75']:.1f}  (n={value['n']})")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
