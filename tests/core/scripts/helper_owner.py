"""Child process for tests/core/test_owner_death.py: own one box with host helpers, report them.

Usage: helper_owner.py HOME ROOTFS ENGINE [--detach] [--volume DIR] [--secret] [--starting [--warm]]

Starts a box with network enabled (pasta, or QEMU's slirp) and, with ``--volume``, a volume
(virtiofsd on the VM engine), starts a background ``sleep`` that ignores SIGTERM in it, prints
one JSON line naming the box and every host process and cgroup it has, then sleeps until a
signal ends it (no signal handler of ours: SIGTERM kills this process without any Python
clean-up, SIGINT raises KeyboardInterrupt as in any script). ``--starting``: print
``{"id": ...}`` first, right before the box starts (to be killed while it starts); ``--warm``:
start and remove a box before (the engine's image caches are made then, not in that start).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

import boxlite


def children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children_of(p)
    return out


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("home")
    ap.add_argument("rootfs")
    ap.add_argument("engine")
    ap.add_argument("--detach", action="store_true")
    ap.add_argument("--volume")
    ap.add_argument("--starting", action="store_true", help="print the box id before starting it")
    ap.add_argument("--warm", action="store_true", help="first run a box to completion (image caches)")
    ap.add_argument("--secret", action="store_true", help="give the box a secret (a host-side secret proxy)")
    args = ap.parse_args()
    rt = boxlite.Boxlite(boxlite.Options(home_dir=args.home, engine=args.engine))
    volumes: list = [(args.volume, "/data")] if args.volume else []
    secrets = [boxlite.Secret("tok", "owner-death-secret-value", hosts=["api.example.test"])] if args.secret else []
    options = boxlite.BoxOptions(
        rootfs_path=args.rootfs,
        network="enabled",
        volumes=volumes,
        detach=args.detach,
        auto_remove=False,
        secrets=secrets,
    )
    if args.warm:
        warm = await rt.create(options)
        await warm.start()
        await rt.remove(warm.id, force=True)
    box = await rt.create(options)
    if args.starting:
        print(json.dumps({"id": box.id}), flush=True)
    await box.start()
    await box.exec("sh", ["-c", "trap '' TERM; sleep 1000"], stdin=False)  # ignores SIGTERM
    box_dir = Path(args.home) / "boxes" / box.id
    run = box_dir / "run"
    helpers: dict[str, int | None] = {"agent": box.info().state.pid}
    if args.engine == "namespace":
        helpers["pasta"] = read_pid(box_dir / "pasta.pid")
        helpers["keeper"] = read_pid(box_dir / "keeper.pid")
        cgroups = list(json.loads((box_dir / "cgroups.json").read_text())["paths"].values())
    else:
        helpers["qemu"] = read_pid(run / "qemu.pid")
        shim = helpers["agent"]
        for i, child in enumerate(c for c in children_of(shim or 0) if comm(c) == "virtiofsd"):
            helpers[f"virtiofsd{i}"] = child
        cgroups = []
    pids = {p for root in [*helpers.values(), os.getpid()] if root for p in tree(root)} - {os.getpid()}
    report = {
        "id": box.id,
        "owner": os.getpid(),
        "helpers": helpers,
        "pids": {p: comm(p) for p in sorted(pids)},
        "cgroups": cgroups,
    }
    print(json.dumps(report), flush=True)
    if not args.detach:
        await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main())
