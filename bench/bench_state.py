"""Snapshot, clone, export and import of a box that wrote 200 MB, against copying its directory.

    python bench/bench_state.py [--runs 5] [--quick] [--mib 200] [--engines namespace,vm] [--json out.json]

Each run prepares a fresh stopped box whose writable layer holds ``--mib`` MB of random data
(a clone of one base box, then the write; not timed), then times ``box.snapshot.create`` first
(it freezes that layer; the target: <= 50 ms whatever the size) and the rest in an order
rotated per run:
  * ``box.clone_box()`` of the stopped box;
  * ``box.export`` (uncompressed, image included) and ``Boxlite.import_box`` of that archive;
  * the peers on the same box directory: ``cp -a --reflink=auto`` (ext4 here: a full copy),
    ``tar -S -cf`` of it (sparse files stay sparse) and ``tar -xf`` of that tar.
Sections per engine (all measured in the same runs, so they share one load before/after):
clone vs cp -a; export vs tar -S -cf; import vs tar -xf; export + import vs tar -cf + tar -xf;
snapshot create alone (no tool has a peer for it). Medians with min/max/IQR; ratios of medians.
"""

from __future__ import annotations

import asyncio
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

CP = "cp -a --reflink=auto of the box dir"
TAR_C = "tar -S -cf of the box dir"
TAR_X = "tar -xf of that tar"
TAR_CX = "tar -S -cf + tar -xf"
VS_PEER = "library call vs the peer's process, on the same box directory"
# section title -> (kind, baseline, rows): every row is a key of the samples of bench_engine
SECTIONS: dict[str, tuple[str, str | None, list[str]]] = {
    "snapshot create of the stopped box": ("library call; no peer (target <= 50 ms)", None, ["snapshot create"]),
    "copy of a stopped box: clone vs cp -a": (VS_PEER, CP, ["clone (stopped box)", CP]),
    "box to an archive: export vs tar": (VS_PEER, TAR_C, ["export (.boxlite, uncompressed)", TAR_C]),
    "archive to a box: import vs untar": (VS_PEER, TAR_X, ["import", TAR_X]),
    "round trip: export + import vs tar + untar": (VS_PEER, TAR_CX, ["export + import", TAR_CX]),
}


def run_s(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


async def timed(coro: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = await coro
    return time.perf_counter() - t0, result


async def sh(box: boxlite.Box, script: str) -> None:
    execution = await box.exec("sh", ["-c", script], stdin=False)
    status = await execution.wait()
    if status.exit_code != 0:
        raise RuntimeError(f"{script!r} failed: {status}")


async def bench_engine(engine: str, rootfs: Path, runs: int, mib: int, work: Path, report: bl.Report) -> None:
    # every section is measured by the same runs: opened before them, closed after them
    sections = {
        title: report.section(f"{title}, {mib} MB written ({engine} engine)", kind, baseline=base)
        for title, (kind, base, _) in SECTIONS.items()
    }
    samples: dict[str, list[float]] = {}
    archive_mib: list[float] = []
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
                dt, copy = await timed(b.clone_box(name=f"c{n}"))
                samples.setdefault("clone (stopped box)", []).append(dt)
                await rt.remove(copy.id, force=True)

            async def export_import(b: boxlite.Box = box, s: Path = scratch, n: int = i) -> None:
                dt, path = await timed(b.export(dest=str(s / "box.boxlite")))
                samples.setdefault("export (.boxlite, uncompressed)", []).append(dt)
                dt2, copy = await timed(rt.import_box(path, name=f"i{n}"))
                samples.setdefault("import", []).append(dt2)
                samples.setdefault("export + import", []).append(dt + dt2)
                archive_mib.append(Path(path).stat().st_size / 2**20)
                await rt.remove(copy.id, force=True)
                Path(path).unlink()

            async def peers(d: Path = box_dir, s: Path = scratch) -> None:
                samples.setdefault(CP, []).append(run_s(["cp", "-a", "--reflink=auto", str(d), str(s / "cp")]))
                tar_c = run_s(["tar", "-S", "-cf", str(s / "box.tar"), "-C", str(d), "."])
                (s / "untar").mkdir()
                tar_x = run_s(["tar", "-xf", str(s / "box.tar"), "-C", str(s / "untar")])
                samples.setdefault(TAR_C, []).append(tar_c)
                samples.setdefault(TAR_X, []).append(tar_x)
                samples.setdefault(TAR_CX, []).append(tar_c + tar_x)
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
    for title, (_, _, names) in SECTIONS.items():
        s = sections[title]
        for name in names:
            s.add(name, samples[name], "s")
        if title.startswith("box to an archive"):
            s.add("archive size (.boxlite)", archive_mib, "MiB", compare=False)
        report.close(s)


def main() -> int:
    ap = bl.common_args(__doc__, runs=5, quick_runs=1)
    ap.add_argument("--mib", type=int, default=None, help="MB the box writes (default 200; --quick: 8)")
    ap.add_argument("--engines", default="namespace", help="comma-separated: namespace, vm")
    args = bl.parse(ap)
    if args.mib is None:
        args.mib = 8 if args.quick else 200
    from support.images import build_busybox_rootfs

    report = bl.Report("state", args)
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="boxlite-bench-state-") as tmp:
        rootfs = build_busybox_rootfs(Path(tmp) / "rootfs")
        for engine in args.engines.split(","):
            work = Path(tmp) / engine
            work.mkdir()
            asyncio.run(bench_engine(engine, rootfs, args.runs, args.mib, work, report))
    report.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
