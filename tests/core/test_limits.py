"""Resource limits: fork bombs, memory hogs and CPU quotas stay inside their box."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import pytest

import boxlite

pytestmark = pytest.mark.namespace_only

# An exponential fork bomb. busybox sh exits when it cannot fork, so the bomb burns out once it
# hits the limit; ``exec sleep`` keeps the execution (and its process group) alive meanwhile.
FORK_BOMB = "exec 2>/dev/null; bomb() { bomb & bomb & wait; }; bomb & exec sleep 60"
# Fill every free pid with sleepers that stay; the first shell keeps the group alive.
FILL_PIDS = "exec 2>/dev/null; { while :; do sleep 1000 & done; } & exec sleep 60"
# Same, but the execution itself ends: the sleepers are orphans the box's init inherits.
ORPHAN_FILL = "exec 2>/dev/null; while :; do sleep 1000 & done"


def cgroup_dirs(runtime: boxlite.Boxlite, box_id: str) -> dict[str, str]:
    data = json.loads((runtime.home.box_dir(box_id) / "cgroups.json").read_text())
    return dict(data["paths"])


def cgroup_value(runtime: boxlite.Boxlite, box_id: str, controller: str, v1: str, v2: str) -> str:
    paths = cgroup_dirs(runtime, box_id)
    if "unified" in paths:
        return (Path(paths["unified"]) / v2).read_text().strip()
    return (Path(paths[controller]) / v1).read_text().strip()


async def test_fork_bomb_is_contained(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime, pids_limit=64) as box:
        assert cgroup_value(runtime, box.id, "pids", "pids.max", "pids.max") == "64"
        bomb = await box.box.exec("sh", ["-c", FORK_BOMB], stdin=False, timeout_secs=2)
        peak = 0
        while not bomb._channel.exit.done():
            peak = max(peak, (await box.metrics()).pids or 0)
            await asyncio.sleep(0.01)
        assert (await bomb.wait()).timed_out
        assert 0 < peak <= 64
        refused = cgroup_value(runtime, box.id, "pids", "pids.events", "pids.events").split()
        assert refused[0] == "max" and int(refused[1]) > 0, "the bomb never reached the limit"
        # The box answers again once the bomb is gone, and the host can still fork.
        await wait_for_pids(box, IDLE_PIDS)
        result = await box.exec("sh", "-c", "echo alive; ps | wc -l")
        word, count = result.stdout.split()
        assert word == "alive" and int(count) <= 6  # header, init, spawner, sh, ps (and wc, if forked yet)
        assert subprocess.run(["true"]).returncode == 0


async def test_fork_bomb_can_be_killed(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime, pids_limit=32) as box:
        bomb = await box.box.exec("sh", ["-c", FILL_PIDS], stdin=False)
        for _ in range(100):
            if ((await box.metrics()).pids or 0) >= 30:
                break
            await asyncio.sleep(0.05)
        assert ((await box.metrics()).pids or 0) >= 30
        await bomb.kill()
        assert (await asyncio.wait_for(bomb.wait(), 10)).exit_code == 137
        await wait_for_pids(box, IDLE_PIDS)
        assert (await box.exec("echo", "ok")).stdout == "ok\n"


async def test_orphaned_fork_bomb_is_contained_and_stop_recovers(
    runtime: boxlite.Boxlite, busybox_rootfs: Path
) -> None:
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), pids_limit=32, auto_remove=False))
    bomb = await box.exec("sh", ["-c", ORPHAN_FILL], stdin=False)
    await bomb.wait()
    for _ in range(100):
        if ((await box.metrics()).pids or 0) >= 30:
            break
        await asyncio.sleep(0.05)
    assert 30 <= ((await box.metrics()).pids or 0) <= 32
    # A new command cannot get a process: a typed error, not a hang.
    try:
        squeezed = await asyncio.wait_for(box.exec("true", stdin=False), 10)
    except boxlite.ExecError as e:
        assert "unavailable" in str(e).lower() or "resource" in str(e).lower(), e
    else:
        await asyncio.wait_for(squeezed.wait(), 10)
    assert subprocess.run(["true"]).returncode == 0  # the host still forks
    start = time.monotonic()
    await box.stop(timeout=1)
    assert time.monotonic() - start < 10
    assert box.info().state.status == "stopped"
    await box.start()
    result = await box.exec("echo", ["ok"])
    assert (await result.stdout().read()) == "ok\n"
    await box.stop()
    await runtime.remove(box.id)


IDLE_PIDS = 2  # the agent and its spawner (which a namespace box retires after SPAWNER_IDLE s unused)


async def wait_for_pids(box: boxlite.SimpleBox, count: int, timeout: float = 5.0) -> None:
    """Until the box has at most ``count`` processes."""
    deadline = time.monotonic() + timeout
    while ((await box.metrics()).pids or 0) > count:
        assert time.monotonic() < deadline, f"box still has {(await box.metrics()).pids} processes"
        await asyncio.sleep(0.02)


async def test_default_pids_limit_applies(box: boxlite.SimpleBox, runtime: boxlite.Boxlite) -> None:
    limit = cgroup_value(runtime, box.id, "pids", "pids.max", "pids.max")
    assert limit.isdigit() and 0 < int(limit) <= 65536


async def test_memory_hog_is_killed_and_box_survives(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime, memory_mib=64) as box:
        limit = cgroup_value(runtime, box.id, "memory", "memory.limit_in_bytes", "memory.max")
        assert int(limit) == 64 << 20
        hog = await box.exec("dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1", timeout=30)
        assert hog.exit_code == 137, hog
        assert (await box.exec("echo", "still here")).stdout == "still here\n"
        peak = (await box.metrics()).memory_peak_bytes
        assert peak is None or peak <= 64 << 20


async def test_one_boxs_hog_does_not_hurt_another(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    async with (
        boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime, memory_mib=64) as hog_box,
        boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime, memory_mib=128) as calm_box,
    ):
        calm = await calm_box.box.exec(
            "sh", ["-c", "dd if=/dev/zero of=/dev/null bs=32M count=1 && sleep 0.5 && echo fine"], stdin=False
        )
        hogs = await asyncio.gather(
            *(hog_box.exec("dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1") for _ in range(2))
        )
        assert all(h.exit_code == 137 for h in hogs)
        assert (await calm.stdout().read()) == "fine\n"
        assert (await calm.wait()).exit_code == 0
        assert (await calm_box.exec("echo", "ok")).stdout == "ok\n"
        assert (await hog_box.exec("echo", "ok")).stdout == "ok\n"


async def test_cpu_limit_is_applied(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime, cpus=0.25) as box:
        paths = cgroup_dirs(runtime, box.id)
        if "unified" in paths:
            assert (Path(paths["unified"]) / "cpu.max").read_text().split() == ["25000", "100000"]
        else:
            assert (Path(paths["cpu"]) / "cpu.cfs_quota_us").read_text().strip() == "25000"
            assert (Path(paths["cpu"]) / "cpu.cfs_period_us").read_text().strip() == "100000"
        before = (await box.metrics()).cpu_time_ms or 0.0
        start = time.monotonic()
        execution = await box.box.exec("sh", ["-c", "while :; do :; done"], stdin=False, timeout_secs=1.2)
        assert (await execution.wait()).timed_out
        wall_ms = (time.monotonic() - start) * 1000
        used = ((await box.metrics()).cpu_time_ms or 0.0) - before
        assert 0 < used < 0.25 * wall_ms + 150, (used, wall_ms)
        info = box.info()
        assert info.cpus == 0.25


async def test_many_small_hogs_do_not_kill_the_agent(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    """Under memory pressure the kernel kills the box's processes, never its supervisor."""
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), memory_mib=64, auto_remove=False))
    await (await box.exec("true", stdin=False)).wait()
    agent = box.info().state.pid
    hog = "dd if=/dev/zero bs=4M count=1 2>/dev/null | sleep 30"  # dd blocks holding 4 MiB
    execs = [await box.exec("sh", ["-c", hog], stdin=False, timeout_secs=5) for _ in range(24)]
    statuses = await asyncio.wait_for(asyncio.gather(*(e.wait() for e in execs)), 30)
    assert any(s.exit_code == 137 and not s.timed_out for s in statuses), statuses
    assert all(s.error_message is None or "went away" not in s.error_message for s in statuses)
    assert box.info().state.pid == agent
    execution = await box.exec("echo", ["alive"], stdin=False)
    assert await execution.stdout().read() == "alive\n"
    await runtime.remove(box.id, force=True)


async def test_filling_tmpfs_does_not_wedge_the_box(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    """/tmp, /run and /dev/shm live in the box's memory: filling them fails (ENOSPC or a
    killed writer) and the box stays usable; the space can be freed again."""
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), memory_mib=64, auto_remove=False))
    await (await box.exec("true", stdin=False)).wait()
    agent = box.info().state.pid
    for target in ("/tmp/big", "/dev/shm/big", "/run/big"):
        fill = await box.exec("dd", ["if=/dev/zero", f"of={target}", "bs=1M", "count=200"], stdin=False)
        status = await asyncio.wait_for(fill.wait(), 30)
        assert status.exit_code != 0 and status.exit_code != -1, (target, status)
        assert box.info().state.pid == agent, target
        echo = await box.exec("echo", ["alive"], stdin=False)
        assert await asyncio.wait_for(echo.stdout().read(), 10) == "alive\n", target
        rm = await box.exec("rm", ["-f", target], stdin=False)
        assert (await asyncio.wait_for(rm.wait(), 10)).exit_code == 0
    await runtime.remove(box.id, force=True)


def test_a_box_cgroup_parent_removed_since_the_last_start_is_made_again(tmp_path: Path) -> None:
    """The runtime remembers the real path of each ``.../boxlite`` cgroup parent it made (v1's
    ``cpu`` is a link to ``cpu,cpuacct``); one removed since (by an admin, a cleanup tool) is
    made again for the next box, else that box's cgroup could not be created."""
    from boxlite.engines.namespace.cgroups import _made_parent

    (tmp_path / "cpu,cpuacct").mkdir()
    (tmp_path / "cpu").symlink_to("cpu,cpuacct")
    parent = str(tmp_path / "cpu" / "user.slice" / "boxlite")
    real = str(tmp_path / "cpu,cpuacct" / "user.slice" / "boxlite")
    assert _made_parent(parent) == real and Path(real).is_dir()
    Path(real).rmdir()
    assert _made_parent(parent) == real and Path(real).is_dir()
    (tmp_path / "cpu,cpuacct" / "user.slice").rename(tmp_path / "gone")
    assert _made_parent(parent) == real and Path(real).is_dir()
