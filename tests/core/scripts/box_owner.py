"""Child process for the multiprocess tests: own one box, report it as JSON, then act.

Usage: box_owner.py HOME ROOTFS ACTION [--detach] [--auto-remove] [--name NAME]

ACTION ``exit``: start the box, write /owner.txt, print the report and exit normally.
ACTION ``hang``: the same, plus a background ``sleep`` in the box; then wait to be killed.
ACTION ``work``: create, exec and remove COUNT boxes (``--count``), print a report, exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time

import boxlite


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("home")
    ap.add_argument("rootfs")
    ap.add_argument("action", choices=["exit", "hang", "work"])
    ap.add_argument("--detach", action="store_true")
    ap.add_argument("--auto-remove", action="store_true")
    ap.add_argument("--name")
    ap.add_argument("--count", type=int, default=3)
    ap.add_argument("--fork-child", action="store_true", help="fork a child (no exec) that outlives us")
    args = ap.parse_args()
    rt = boxlite.Boxlite(boxlite.Options(home_dir=args.home, engine="namespace"))
    if args.action == "work":
        outputs = []
        for i in range(args.count):
            box = await rt.create(boxlite.BoxOptions(rootfs_path=args.rootfs, auto_remove=True))
            execution = await box.exec("sh", ["-c", f"echo {os.getpid()}-{i}"], stdin=False)
            outputs.append((await execution.stdout().read()).strip())
            assert (await execution.wait()).exit_code == 0
            await box.stop()
        print(json.dumps({"outputs": outputs}), flush=True)
        await rt.shutdown()
        return
    options = boxlite.BoxOptions(rootfs_path=args.rootfs, detach=args.detach, auto_remove=args.auto_remove)
    box = await rt.create(options, name=args.name)
    execution = await box.exec("sh", ["-c", f"echo {os.getpid()} > /owner.txt"], stdin=False)
    assert (await execution.wait()).exit_code == 0
    if args.action == "hang":
        await box.exec("sleep", ["1000"], stdin=False)
    info = box.info()
    child = 0
    if args.fork_child and (child := os.fork()) == 0:  # like a multiprocessing worker
        os.setsid()
        os.close(0)
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
        time.sleep(30)
        os._exit(0)
    report = {"id": box.id, "pid": info.state.pid, "owner": os.getpid(), "child": child}
    print(json.dumps(report), flush=True)
    if args.action == "hang":
        sys.stdin.read()  # until the test kills us (or closes our stdin)
    # "exit": leave without shutdown(), like a script that just ends.


if __name__ == "__main__":
    asyncio.run(main())
