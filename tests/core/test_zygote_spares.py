"""The namespace zygote forks each box's boot process and keeper ahead of the box ("spares",
agent/zygote.py): a spare must hold nothing of the boxes started before it, a dead spare must
not stop the next box from starting (with its keeper), and no spare may outlive the zygote."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import boxlite
from boxlite.runtime.engines import select_engine

pytestmark = pytest.mark.namespace_only

GONE_WITHIN = 5.0


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def zygote_pid() -> int:
    (zygote,) = [z for z in select_engine("namespace")._zygotes.values() if z._proc is not None]  # type: ignore[attr-defined]
    return int(zygote._proc.pid)


def spares(zygote: int) -> list[int]:
    """The zygote's spare boot process and keeper: all its descendants once every box started
    has its PID 1 (a box's boot process exits then, and its keeper and PID 1 leave the tree)."""
    found, todo = [], children(zygote)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children(pid)
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def until(check: object, what: str, within: float = GONE_WITHIN) -> None:
    deadline = time.monotonic() + within
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def opts(rootfs: Path) -> boxlite.BoxOptions:
    return boxlite.BoxOptions(rootfs_path=str(rootfs), network="disabled", auto_remove=False)


async def started(runtime: boxlite.Boxlite, rootfs: Path) -> boxlite.Box:
    box = await runtime.create(opts(rootfs))
    execution = await box.exec("true", stdin=False)
    assert (await execution.wait()).exit_code == 0
    return box


async def test_a_spare_holds_nothing_of_the_boxes_started_before_it(
    runtime: boxlite.Boxlite, busybox_rootfs: Path
) -> None:
    """Each box's status pipe, boot log and lifeline reach its boot process only: a spare forked
    while the zygote still held them would keep a box's lifeline open after its owner died."""
    boxes = [await started(runtime, busybox_rootfs) for _ in range(2)]
    zygote = zygote_pid()
    until(lambda: len(spares(zygote)) == 2, "no spare boot process and keeper ready for the next box")
    for pid in spares(zygote):
        held = {fd: os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd") if int(fd) > 2}
        assert held and all(t.startswith(("socket:", "user:")) for t in held.values()), (pid, held)
    for box in boxes:
        await runtime.remove(box.id, force=True)


@pytest.mark.parametrize("lost", ["boot process", "keeper"])
async def test_a_box_starts_when_its_spare_died(runtime: boxlite.Boxlite, busybox_rootfs: Path, lost: str) -> None:
    """A spare killed (OOM killer, an operator) costs the next box a fork, not its start; a box
    whose spare keeper is gone gets one of its own, which removes its cgroups when it stops."""
    await runtime.remove((await started(runtime, busybox_rootfs)).id, force=True)
    zygote = zygote_pid()
    until(lambda: len([p for p in spares(zygote) if alive(p)]) == 2, "no spare ready")
    boot, keeper = sorted(spares(zygote), key=lambda pid: pid not in children(zygote))  # the keeper: a grandchild
    victim = boot if lost == "boot process" else keeper
    os.kill(victim, signal.SIGKILL)
    until(lambda: not alive(victim), "the killed spare is still there")
    box = await started(runtime, busybox_rootfs)
    dirs = list(json.loads((runtime.home.box_dir(box.id) / "cgroups.json").read_text())["paths"].values())
    assert dirs and all(os.path.isdir(d) for d in dirs)
    await box.stop()
    until(lambda: not any(os.path.isdir(d) for d in dirs), f"cgroups left after the stop: {dirs}")
    await runtime.remove(box.id)
    assert zygote_pid() == zygote


OWNER = """
import asyncio, json, sys
import boxlite
from boxlite.runtime.engines import select_engine

async def main():
    rt = boxlite.Boxlite(boxlite.Options(home_dir=sys.argv[1], engine="namespace"))
    box = await rt.create(boxlite.BoxOptions(rootfs_path=sys.argv[2], network="disabled"))
    await (await box.exec("true", stdin=False)).wait()
    (zygote,) = select_engine("namespace")._zygotes.values()
    print(json.dumps({"zygote": zygote._proc.pid}), flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


def test_no_spare_outlives_the_zygote_of_a_dead_owner(tmp_path: Path, busybox_rootfs: Path) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(tmp_path / "home"), str(busybox_rootfs)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        zygote = json.loads(owner.stdout.readline())["zygote"]
        until(lambda: len(spares(zygote)) == 2, "no spare ready", within=30)
        left = spares(zygote)
    finally:
        owner.kill()
        owner.wait()
    until(lambda: not any(alive(pid) for pid in [zygote, *left]), "a spare outlived its zygote")
