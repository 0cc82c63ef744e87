#!/usr/bin/env python3
"""The VM runtime artifact's input key, as runtime/build.py computes it, without building.

    runtime_key.py [--debug]          print "<artifact key> <kernel key>" for the current inputs
    runtime_key.py --check DIR        warn (exit 1) if DIR/manifest.json was built from other inputs
    runtime_key.py --prune CACHE      drop cache entries the current inputs do not use (CI cache)

CI keys its actions/cache of the runtime build cache on these; `make dist:*` uses --check to
warn about a stale target/boxlite-runtime (it never rebuilds it). Mirrors the first lines of
build.py's build_artifact(); if that changes, the worst case is a cache miss or a false warning.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "runtime"))
import build  # noqa: E402  (runtime/build.py)


def candidate_versions(pkgs: list[str]) -> dict[str, str]:
    """build.candidate_version() for all of ``pkgs`` with one `apt-cache policy` call."""
    out: dict[str, str] = {}
    current = None
    for line in build.run(["apt-cache", "policy", *pkgs]).splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            current = line[:-1]
            continue
        key, _, value = line.strip().partition(": ")
        if key == "Candidate" and current and value and value != "(none)":
            out[current] = value
    missing = [p for p in pkgs if p not in out]
    if missing:
        raise SystemExit(f"runtime_key: not available from apt: {' '.join(missing)} (run apt-get update?)")
    return out


def keys(debug: bool) -> tuple[str, str]:
    cand = candidate_versions([build.KERNEL_PACKAGE, *build.PACKAGES])
    kver = build.installed_version(build.KERNEL_PACKAGE) or cand[build.KERNEL_PACKAGE]
    versions = {pkg: cand[pkg] for pkg in build.PACKAGES}
    kkey = build.kernel_key(kver)
    return build.artifact_key(kkey, versions, debug), kkey


def check(path: Path) -> int:
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        print(f"runtime_key: {path}: no manifest ({e}); run `make runtime`", file=sys.stderr)
        return 1
    current, _ = keys(bool(manifest.get("debug")))
    if manifest.get("key") != current:
        print(
            f"runtime_key: warning: {path} was built from other inputs (key {manifest.get('key')}, "
            f"current {current}); `make runtime` refreshes it",
            file=sys.stderr,
        )
        return 1
    return 0


def prune(cache: Path) -> None:
    keep = set()
    for debug in (False, True):
        akey, kkey = keys(debug)
        keep |= {f"runtime-{akey}{'-debug' if debug else ''}", f"kernel-{kkey}"}
    keep |= {"debs", "locks"}
    if not cache.is_dir():
        return
    for entry in cache.iterdir():
        if entry.name not in keep:
            print(f"runtime_key: prune {entry}", file=sys.stderr)
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    for deb in (cache / "debs").glob(f"{build.KERNEL_PACKAGE}_*.deb"):  # ~150 MB, only for kernel builds
        deb.unlink()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--debug", action="store_true")
    ap.add_argument("--check", type=Path, metavar="DIR")
    ap.add_argument("--prune", type=Path, metavar="CACHE")
    args = ap.parse_args()
    if args.check:
        return check(args.check)
    if args.prune:
        prune(args.prune)
        return 0
    akey, kkey = keys(args.debug)
    print(akey, kkey)
    return 0


if __name__ == "__main__":
    sys.exit(main())
