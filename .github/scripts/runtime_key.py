#!/usr/bin/env python3
"""The VM runtime artifact's input key, as runtime/build.py computes it, without building.

    runtime_key.py [--debug]          print "<artifact key> <kernel key>" for the current inputs
    runtime_key.py --check DIR        is DIR/manifest.json built from the current inputs?
    runtime_key.py --prune CACHE      drop cache entries the current inputs do not use (CI cache)

Exit status: 0 ok; 1 (--check only) the artifact is stale or missing, a warning: `make dist:*`
prints it and packages the artifact anyway (it never rebuilds it); 2 the keys could not be
computed (a bug, or no apt), which fails `make dist:*` and the workflow. CI keys its
actions/cache of the runtime build cache on these keys. The keys come from build.inputs(), the
function build.py itself builds from, so the two cannot drift apart.
Tested as the workflow calls it: tests/build/test_workflow_scripts.py.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "runtime"))
import build  # noqa: E402  (runtime/build.py)

EXIT_STALE = 1
EXIT_ERROR = 2


def keys(debug: bool) -> tuple[str, str]:
    cur = build.inputs(debug)
    return cur.key, cur.kernel_key


def check(path: Path) -> int:
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        print(f"runtime_key: warning: {path}: no manifest ({e}); run `make runtime`", file=sys.stderr)
        return EXIT_STALE
    current, _ = keys(bool(manifest.get("debug")))
    if manifest.get("key") != current:
        print(
            f"runtime_key: warning: {path} was built from other inputs (key {manifest.get('key')}, "
            f"current {current}); `make runtime` refreshes it",
            file=sys.stderr,
        )
        return EXIT_STALE
    return 0


def prune(cache: Path) -> None:
    keep = {"debs", "locks"}
    for debug in (False, True):
        akey, kkey = keys(debug)
        keep |= {f"runtime-{akey}{'-debug' if debug else ''}", f"kernel-{kkey}"}
    if not cache.is_dir():
        return
    for entry in sorted(cache.iterdir()):
        if entry.name not in keep:
            print(f"runtime_key: prune {entry}", file=sys.stderr)
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    for deb in (cache / "debs").glob(f"{build.KERNEL_PACKAGE}_*.deb"):  # ~150 MB, only for kernel builds
        print(f"runtime_key: prune {deb}", file=sys.stderr)
        deb.unlink()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--debug", action="store_true")
    ap.add_argument("--check", type=Path, metavar="DIR")
    ap.add_argument("--prune", type=Path, metavar="CACHE")
    args = ap.parse_args(argv)
    if args.check:
        return check(args.check)
    if args.prune:
        prune(args.prune)
        return 0
    akey, kkey = keys(args.debug)
    print(akey, kkey)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit as e:  # build.py's "not available from apt" and argparse's usage errors
        if e.code not in (None, 0, EXIT_STALE):
            if not isinstance(e.code, int):
                print(f"runtime_key: error: {e.code}", file=sys.stderr)
            sys.exit(EXIT_ERROR)
        raise
    except BaseException:
        traceback.print_exc()
        print("runtime_key: error: could not compute the runtime input keys (see above)", file=sys.stderr)
        sys.exit(EXIT_ERROR)
