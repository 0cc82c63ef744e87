"""Several processes on one home: detached boxes outlive their creator, concurrent runtimes,
and a killed owner takes its (non-detached) boxes down with it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import boxlite
from boxlite.engines.base import process_start_time

SCRIPT = Path(__file__).parent / "scripts" / "box_owner.py"
SRC = Path(__file__).resolve().parents[2] / "src"


def spawn_owner(home: Path, rootfs: Path, action: str, *flags: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(home), str(rootfs), action, *flags],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def report(proc: subprocess.Popen[str], timeout: float = 30) -> dict:
    """The child's JSON line (fails with its stderr if it died first)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = proc.stdout.readline()
    if not line:
        proc.wait(max(0.1, deadline - time.monotonic()))
        raise AssertionError(f"child exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
    return json.loads(line)


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)
        for f in (p.stdin, p.stdout, p.stderr):
            if f is not None:
                f.close()


def wait_gone(pid: int, start: int | None, timeout: float) -> float:
    """Seconds until ``pid`` (with that start time) is gone; fails after ``timeout``."""
    t0 = time.monotonic()
    while process_start_time(pid) is not None and process_start_time(pid) == start:
        assert time.monotonic() - t0 < timeout, f"pid {pid} still alive after {timeout}s"
        time.sleep(0.01)
    return time.monotonic() - t0


def cgroup_state(home: Path, box_id: str) -> tuple[list[str], list[int]]:
    """(cgroup dirs of the box, pids in them) as recorded in its box dir."""
    try:
        paths = list(json.loads((home / "boxes" / box_id / "cgroups.json").read_text())["paths"].values())
    except OSError:
        return [], []
    pids: list[int] = []
    for path in paths:
        try:
            pids += [int(p) for p in (Path(path) / "cgroup.procs").read_text().split()]
        except OSError:
            pass
    return paths, pids


def new_runtime(home: Path) -> boxlite.Boxlite:
    return boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine="namespace"))


async def read_file(box: boxlite.Box, path: str) -> str:
    execution = await box.exec("cat", [path], stdin=False)
    out = await execution.stdout().read()
    assert (await execution.wait()).exit_code == 0
    return out


async def test_detached_box_outlives_its_creator(home: Path, busybox_rootfs: Path, children: list) -> None:
    proc = spawn_owner(home, busybox_rootfs, "exit", "--detach", "--name", "daemon")
    children.append(proc)
    rep = report(proc)
    assert proc.wait(30) == 0
    agent, start = rep["pid"], process_start_time(rep["pid"])
    assert start is not None, "the detached box died with its creator"
    rt = new_runtime(home)
    try:
        box = await rt.get(rep["id"])
        assert box is not None and (await rt.get("daemon")) is not None
        info = box.info()
        assert info.state.status == "running" and info.detach and info.state.pid == agent
        assert await read_file(box, "/owner.txt") == f"{rep['owner']}\n"
        assert box.info().state.pid == agent  # reattached, not restarted
        await rt.shutdown()  # detached boxes are not ours to stop
        assert process_start_time(agent) == start
        rt = new_runtime(home)
        box = await rt.get(rep["id"])
        assert box is not None
        await box.stop()
        wait_gone(agent, start, 5)
        assert box.info().state.status == "stopped"
        assert cgroup_state(home, rep["id"]) == ([], [])
    finally:
        await rt.shutdown()
        await new_runtime(home).remove(rep["id"], force=True)


async def test_two_runtimes_on_one_home_at_once(home: Path, busybox_rootfs: Path, children: list) -> None:
    procs = [spawn_owner(home, busybox_rootfs, "work", "--count", "3") for _ in range(2)]
    children.extend(procs)
    rt = new_runtime(home)  # and this process as a third user of the home
    try:
        mine = []
        for i in range(3):
            async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=rt) as box:
                mine.append((await box.exec("echo", f"me-{i}")).stdout.strip())
        assert mine == ["me-0", "me-1", "me-2"]
        for proc in procs:
            rep = report(proc, 60)
            assert rep["outputs"] == [f"{proc.pid}-{i}" for i in range(3)]
            assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
        assert await rt.list_info() == []
        left = [str(p.relative_to(home)) for p in (home / "boxes").rglob("*")]
        assert left == [], left
    finally:
        await rt.shutdown()


@pytest.mark.parametrize("auto_remove", [False, True])
async def test_killed_owner_takes_its_box_down(
    home: Path, busybox_rootfs: Path, children: list, auto_remove: bool
) -> None:
    flags = ["--auto-remove"] if auto_remove else []
    proc = spawn_owner(home, busybox_rootfs, "hang", *flags)
    children.append(proc)
    rep = report(proc)
    agent, start = rep["pid"], process_start_time(rep["pid"])
    paths, pids = cgroup_state(home, rep["id"])
    assert start is not None and paths and len(pids) >= 2  # agent + sleep
    starts = {p: process_start_time(p) for p in pids}
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    # The lifeline: the box notices its owner is gone and shuts itself down.
    assert wait_gone(agent, start, 3) < 3
    for p, s in starts.items():
        wait_gone(p, s, 2)
    rt = new_runtime(home)
    try:
        box = await rt.get(rep["id"])
        if auto_remove:
            assert box is None
            assert not (home / "boxes" / rep["id"]).exists()
        else:
            assert box is not None and box.info().state.status == "stopped"
        for path in paths:
            assert not os.path.exists(path), f"cgroup {path} left behind"
        if not auto_remove:
            assert box is not None
            assert await read_file(box, "/owner.txt") == f"{rep['owner']}\n"
            assert box.info().state.running
            await rt.remove(box.id, force=True)
    finally:
        await rt.shutdown()


async def test_killed_owner_does_not_hurt_other_owners_boxes(home: Path, busybox_rootfs: Path, children: list) -> None:
    victim = spawn_owner(home, busybox_rootfs, "hang")
    survivor = spawn_owner(home, busybox_rootfs, "hang")
    children.extend([victim, survivor])
    v, s = report(victim), report(survivor)
    rt = new_runtime(home)
    try:
        mine = await rt.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=False))
        await read_file(mine, "/etc/hostname")
        victim.kill()
        victim.wait(10)
        wait_gone(v["pid"], process_start_time(v["pid"]), 3)
        assert process_start_time(s["pid"]) is not None
        assert mine.info().state.running
        assert await read_file(mine, "/etc/hostname")
        # A new runtime's crash-recovery sweep leaves live owners' boxes alone.
        rt2 = new_runtime(home)
        states = {i.id: i.state.status for i in await rt2.list_info()}
        await rt2.shutdown()
        assert states[s["id"]] == "running" and states[mine.id] == "running"
        assert states[v["id"]] == "stopped"
        assert process_start_time(s["pid"]) is not None
        assert mine.info().state.running
        # The survivor's owner closing cleanly (no shutdown call) still stops its box, and a
        # runtime that was already open notices and releases the box's cgroups.
        paths, _ = cgroup_state(home, s["id"])
        assert paths
        assert survivor.stdin is not None
        survivor.stdin.close()
        survivor.wait(10)
        wait_gone(s["pid"], process_start_time(s["pid"]), 3)
        assert (await rt.get_info(s["id"])).state.status == "stopped"  # type: ignore[union-attr]
        for path in paths:
            assert not os.path.exists(path), f"cgroup {path} left behind"
    finally:
        await rt.shutdown()


async def test_reattached_box_can_be_stopped_by_another_process(
    home: Path, busybox_rootfs: Path, children: list
) -> None:
    proc = spawn_owner(home, busybox_rootfs, "hang")
    children.append(proc)
    rep = report(proc)
    rt = new_runtime(home)
    try:
        box = await rt.get(rep["id"])
        assert box is not None
        assert await read_file(box, "/owner.txt") == f"{rep['owner']}\n"
        await box.stop()
        assert process_start_time(rep["pid"]) is None
        assert proc.poll() is None  # the owner process itself is unaffected
        assert box.info().state.status == "stopped"
    finally:
        await rt.shutdown()
    assert await asyncio.to_thread(proc.poll) is None


async def test_forked_children_of_the_owner_do_not_keep_its_boxes_alive(
    home: Path, busybox_rootfs: Path, children: list
) -> None:
    """The lifeline belongs to the owner process: a child it forked (a multiprocessing worker,
    say) that outlives it must not keep the owner's boxes running."""
    proc = spawn_owner(home, busybox_rootfs, "hang", "--fork-child")
    children.append(proc)
    rep = report(proc)
    child, child_start = rep["child"], process_start_time(rep["child"])
    try:
        proc.kill()
        proc.wait(10)
        assert process_start_time(child) == child_start  # the forked child lives on
        paths, _ = cgroup_state(home, rep["id"])
        wait_gone(rep["pid"], process_start_time(rep["pid"]), 3)
        rt = new_runtime(home)
        assert (await rt.get_info(rep["id"])).state.status == "stopped"  # type: ignore[union-attr]
        await rt.shutdown()
        assert paths and not any(os.path.exists(p) for p in paths)
    finally:
        if process_start_time(child) == child_start:
            os.kill(child, signal.SIGKILL)


async def test_a_fork_after_shutdown_leaves_the_processes_files_alone(home: Path) -> None:
    """The fork handler that drops the lifeline in forked children must not, once the runtime
    is shut down, close whatever file has since taken the lifeline's number (a multiprocessing
    worker's pipe, say)."""
    rt = new_runtime(home)
    await rt.list_info()  # the runtime and its lifeline exist
    old = rt._backend.core.lifeline_w  # type: ignore[attr-defined]
    await rt.shutdown()
    r, w = os.pipe()
    try:
        os.dup2(r, old)  # the number, reused by a file of the process
        pid = os.fork()
        if pid == 0:
            try:
                os.fstat(old)
                os._exit(0)
            except OSError:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the forked child lost a file it did not own"
    finally:
        for fd in {r, w, old}:
            with contextlib.suppress(OSError):
                os.close(fd)
