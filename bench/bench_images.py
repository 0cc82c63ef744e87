"""Benchmark: pull + unpack of the busybox and python test images from a local registry.

Compares BoxLite's ImageManager.resolve() (pull + verified store + unpack with uid shift) with
``skopeo copy`` + ``umoci unpack`` of the same image, measured in the same run.

* cold: empty BoxLite home / empty OCI dir and bundle;
* warm: everything already pulled (BoxLite: store + unpacked layers cached; skopeo: blobs in the
  OCI dir are skipped, umoci still unpacks into a fresh bundle).

Usage: ``PYTHONPATH=src python bench/bench_images.py [--runs 5] [--json]`` (root required).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.support.images import busybox_layout, python_layout  # noqa: E402
from tests.support.registry import start_registry  # noqa: E402

from boxlite.images import ImageManager, ImageRegistry  # noqa: E402


def timed(fn: Callable[..., object], *args: object) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def boxlite_resolve(home: Path, host: str, ref: str) -> None:
    m = ImageManager(home, [ImageRegistry(host, transport="http")])
    asyncio.run(m.resolve(ref))


def skopeo_umoci(oci_dir: Path, bundle: Path, ref: str) -> None:
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}",
                    f"oci:{oci_dir}:img"], check=True, capture_output=True)
    subprocess.run(["umoci", "unpack", "--image", f"{oci_dir}:img", str(bundle)], check=True,
                   capture_output=True)


def bench(work: Path, host: str, ref: str, runs: int) -> dict[str, float]:
    res: dict[str, list[float]] = {k: [] for k in
                                   ("boxlite_cold", "boxlite_warm", "skopeo_umoci_cold",
                                    "skopeo_umoci_warm")}
    for i in range(runs):
        home = work / f"home{i}"
        res["boxlite_cold"].append(timed(boxlite_resolve, home, host, ref))
        res["boxlite_warm"].append(timed(boxlite_resolve, home, host, ref))
        oci, b1, b2 = work / f"oci{i}", work / f"bundle{i}a", work / f"bundle{i}b"
        res["skopeo_umoci_cold"].append(timed(skopeo_umoci, oci, b1, ref))
        res["skopeo_umoci_warm"].append(timed(skopeo_umoci, oci, b2, ref))
        for p in (home, oci, b1, b2):
            shutil.rmtree(p, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in res.items()}
    med["ratio_cold"] = med["boxlite_cold"] / med["skopeo_umoci_cold"]
    med["ratio_warm"] = med["boxlite_warm"] / med["skopeo_umoci_warm"]
    return med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-images-"))
    server = start_registry(work / "registry")
    try:
        refs = {"busybox": server.push_layout(busybox_layout(), "busybox"),
                "python": server.push_layout(python_layout(), "python")}
        results = {name: bench(work / name, server.host, ref, args.runs)
                   for name, ref in refs.items()}
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"median of {args.runs} runs, seconds (ratio = boxlite / skopeo+umoci)")
    print(f"{'image':8} {'boxlite cold':>12} {'skopeo+umoci cold':>18} {'ratio':>6}   "
          f"{'boxlite warm':>12} {'skopeo+umoci warm':>18} {'ratio':>6}")
    for name, r in results.items():
        print(f"{name:8} {r['boxlite_cold']:12.3f} {r['skopeo_umoci_cold']:18.3f} "
              f"{r['ratio_cold']:6.2f}   {r['boxlite_warm']:12.3f} "
              f"{r['skopeo_umoci_warm']:18.3f} {r['ratio_warm']:6.2f}")


if __name__ == "__main__":
    main()
