"""Image pull + unpack from a local registry: BoxLite against skopeo + tar and skopeo + umoci.

    python bench/bench_images.py [--runs 7] [--quick] [--images busybox,python] [--drop-caches] [--json F]

The registry is Debian's `docker-registry` on 127.0.0.1 (tests/support/registry.py), holding
the busybox and the Debian python test images. Per image, interleaved ABCD/DCBA:
  * cold, whole process vs whole process (baseline: skopeo + tar):
      `boxlite pull IMAGE` (interpreter start, pull, verified store, each layer unpacked as it
      arrives: what skopeo + tar do) in an empty home;
      `boxlite create IMAGE` (the same, then the box's root filesystem and record);
      `skopeo copy docker://IMAGE dir:D` + one plain `tar -xf` per layer;
      `skopeo copy docker://IMAGE oci:D` + `umoci unpack`;
    and, for reference (no peer has a library), BoxLite's in-process `ImageManager.resolve()`.
    Every cold sample starts from empty directories made, and removed, outside its timer;
    `--drop-caches` also drops the page cache (echo 3 > /proc/sys/vm/drop_caches) before each.
  * cache hits (reported as times, never as ratios): `ImageManager.resolve()` and `boxlite create`
    with everything already pulled and unpacked.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import benchlib as bl


def drop_page_cache() -> None:
    subprocess.run(["sync"], check=False)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


class Images:
    def __init__(self, work: Path, host: str, runs: int, drop: bool) -> None:
        self.work, self.host, self.runs, self.drop = work, host, runs, drop
        self.n = 0
        self.cli = bl.boxlite_cli()

    def fresh(self, kind: str) -> Path:
        self.n += 1
        path = self.work / f"{kind}-{self.n}"
        if self.drop:
            drop_page_cache()
        return path

    def home(self, kind: str) -> Path:
        home = self.fresh(kind)
        home.mkdir(parents=True)
        cfg = {"image_registries": [{"host": self.host, "transport": "http"}]}
        (home / "config.json").write_text(json.dumps(cfg))
        return home

    def library(self, home: Path, ref: str) -> float:
        from boxlite.images import ImageManager, ImageRegistry

        t = time.perf_counter()
        asyncio.run(ImageManager(home, [ImageRegistry(self.host, transport="http")]).resolve(ref))
        return time.perf_counter() - t

    def pull(self, home: Path, ref: str) -> float:
        return bl.time_process([*self.cli, "--home", str(home), "pull", "--quiet", ref])

    def create(self, home: Path, ref: str) -> float:
        return bl.time_process([*self.cli, "--home", str(home), "create", "--engine", "namespace", ref])

    def skopeo_tar(self, ref: str) -> float:
        d, root = self.fresh("skopeo-dir"), self.fresh("tar-root")
        root.mkdir()
        t = time.perf_counter()
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"dir:{d}"],
            check=True,
            capture_output=True,
        )
        manifest = json.loads((d / "manifest.json").read_text())
        for layer in manifest["layers"]:
            blob = d / layer["digest"].split(":", 1)[1]
            subprocess.run(["tar", "-xf", str(blob), "-C", str(root), "--numeric-owner"], check=True)
        dt = time.perf_counter() - t
        self.rm(d, root)
        return dt

    def skopeo_umoci(self, ref: str) -> float:
        oci, bundle = self.fresh("oci"), self.fresh("bundle")
        t = time.perf_counter()
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"oci:{oci}:img"],
            check=True,
            capture_output=True,
        )
        subprocess.run(["umoci", "unpack", "--image", f"{oci}:img", str(bundle)], check=True, capture_output=True)
        dt = time.perf_counter() - t
        self.rm(oci, bundle)
        return dt

    def rm(self, *paths: Path) -> None:
        for p in paths:
            shutil.rmtree(p, ignore_errors=True)

    def cold(self, report: bl.Report, name: str, ref: str) -> None:
        def once(kind: str, fn: Callable[[Path, str], float]) -> Callable[[], float]:
            def run() -> float:
                home = self.home(kind)
                try:
                    return fn(home, ref)
                finally:
                    self.rm(home)

            return run

        s = report.section(
            f"{name}: pull + unpack, cold", "whole process vs whole process", baseline="skopeo copy + tar"
        )
        contenders = {
            "boxlite pull": once("pull-home", self.pull),
            "boxlite create": once("cli-home", self.create),
            "skopeo copy + tar": lambda: self.skopeo_tar(ref),
            "skopeo copy + umoci unpack": lambda: self.skopeo_umoci(ref),
            "boxlite ImageManager.resolve": once("lib-home", self.library),
        }
        for fn in contenders.values():  # warm-up, discarded: imports, the registry's page cache
            fn()
        for name_, xs in bl.interleaved(contenders, self.runs).items():
            note = "in-process library call (no peer has one)" if "resolve" in name_ else ""
            s.add(name_, xs, "s", note, compare="resolve" not in name_)
        if self.drop:
            s.notes.append("page cache dropped before every sample (outside the timer)")
        report.close(s)

    def warm(self, report: bl.Report, name: str, ref: str) -> None:
        s = report.section(f"{name}: cache hit (already pulled and unpacked)", "cache hit: absolute times, no ratio")
        lib_home, cli_home = self.home("warm-lib"), self.home("warm-cli")
        self.library(lib_home, ref)
        self.create(cli_home, ref)
        contenders = {
            "boxlite ImageManager.resolve": lambda: self.library(lib_home, ref),
            "boxlite create": lambda: self.create(cli_home, ref),
        }
        for name_, xs in bl.interleaved(contenders, self.runs).items():
            s.add(name_, xs, "s", "in-process" if "resolve" in name_ else "whole process", compare=False)
        report.close(s)
        self.rm(lib_home, cli_home)


def main() -> int:
    ap = bl.common_args(__doc__, runs=7, quick_runs=1)
    ap.add_argument("--images", help="comma-separated: busybox, python (default both; --quick: busybox)")
    ap.add_argument("--drop-caches", action="store_true", help="drop the page cache before every cold sample")
    args = bl.parse(ap)
    bl.require("skopeo", "umoci", "tar", "docker-registry")
    from support.images import busybox_layout, python_layout
    from support.registry import start_registry

    layouts = {"busybox": busybox_layout, "python": python_layout}
    names = [n for n in (args.images or ("busybox" if args.quick else "busybox,python")).split(",") if n]
    unknown = set(names) - set(layouts)
    if unknown:
        ap.error(f"unknown images: {', '.join(sorted(unknown))}")
    report = bl.Report("images", args)
    work = Path(tempfile.mkdtemp(prefix="boxlite-bench-images-"))
    server = start_registry(work / "registry")
    try:
        bench = Images(work / "runs", server.host, args.runs, args.drop_caches)
        for name in names:
            ref = server.push_layout(layouts[name](), name)
            report.info[name] = ref
            bench.cold(report, name, ref)
            bench.warm(report, name, ref)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    report.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
