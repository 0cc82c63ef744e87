"""Errors users rely on: typed, prompt (never a hang), and the box recovers where it can."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest

import boxlite
from boxlite.engines.base import process_start_time


def opts(rootfs: Path, **kw: object) -> boxlite.BoxOptions:
    return boxlite.BoxOptions(rootfs_path=str(rootfs), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        {"cpus": 0},
        {"cpus": -1.5},
        {"memory_mib": 1},
        {"memory_mib": -64},
        {"disk_size_gb": 0},
        {"pids_limit": 0},
        {"engine": "docker"},
        {"ready_timeout": 0},
        {"working_dir": "relative/dir"},
        {"env": ["NOEQUALS"]},
        {"env": {"A=B": "c"}},
        {"env": {"": "x"}},
        {"env": {"K": "nul\0byte"}},
        {"entrypoint": "sh -c true"},
        {"cmd": ["ok", 3]},
        {"network": "bridge"},
        {"ports": ["notaport"]},
        {"ports": [(0, 80)]},
        {"secrets": ["token"]},
        {"secrets": [{"name": "k", "value": "v\r\nX: y", "hosts": ["a.test"]}]},
        {"secrets": [{"name": "k", "value": "v", "hosts": ["10.0.0.1"]}]},
    ],
)
async def test_bad_options_raise_config_error(runtime: boxlite.Boxlite, busybox_rootfs: Path, bad: dict) -> None:
    with pytest.raises(boxlite.ConfigError):
        await runtime.create(opts(busybox_rootfs, **bad))
    assert await runtime.list_info() == []  # nothing half-created
    assert list(runtime.home.boxes_dir.iterdir()) == []


async def test_missing_rootfs_is_not_found(runtime: boxlite.Boxlite, tmp_path: Path) -> None:
    with pytest.raises(boxlite.NotFoundError):
        await runtime.create(boxlite.BoxOptions(rootfs_path=str(tmp_path / "nope")))
    assert await runtime.list_info() == []


async def test_exec_in_a_removed_box(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    box = await runtime.create(opts(busybox_rootfs, auto_remove=False))
    await (await box.exec("true", stdin=False)).wait()
    await runtime.remove(box.id, force=True)
    with pytest.raises(boxlite.NotFoundError):
        await box.exec("true")
    with pytest.raises(boxlite.NotFoundError):
        await box.start()
    with pytest.raises(boxlite.NotFoundError):
        box.info()
    with pytest.raises(boxlite.NotFoundError):
        await box.copy_out("/etc/passwd", "/tmp/never")


async def test_stop_of_a_stopped_box_is_harmless(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    box = await runtime.create(opts(busybox_rootfs, auto_remove=False))
    await box.stop()  # never started
    assert box.info().state.status == "configured"
    await box.start()
    await box.stop()
    await box.stop()
    await box.stop(timeout=0)
    assert box.info().state.status == "stopped"
    assert (await (await box.exec("true", stdin=False)).wait()).exit_code == 0


async def test_stop_while_a_command_runs_ends_its_wait(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    box = await runtime.create(opts(busybox_rootfs, auto_remove=False))
    execution = await box.exec("sleep", ["1000"], stdin=False)
    waiter = asyncio.ensure_future(execution.wait())
    await box.stop(timeout=1)
    status = await asyncio.wait_for(waiter, 5)
    assert status.exit_code != 0


async def wait_dead(pid: int, start: int | None, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while process_start_time(pid) == start and start is not None:
        assert time.monotonic() < deadline, f"pid {pid} still alive"
        await asyncio.sleep(0.01)


@pytest.mark.namespace_only
async def test_killed_agent_fails_fast_and_start_recovers(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    box = await runtime.create(opts(busybox_rootfs, auto_remove=False))
    persisted = await box.exec("sh", ["-c", "echo persisted > /state"], stdin=False)
    assert (await persisted.wait()).exit_code == 0  # on disk before the agent is killed
    running = await box.exec("sh", ["-c", "echo started; sleep 1000"], stdin=False)
    out = running.stdout().__aiter__()
    assert await out.__anext__() == "started\n"
    pid = box.info().state.pid
    assert pid is not None
    start = process_start_time(pid)
    os.kill(pid, signal.SIGKILL)
    await wait_dead(pid, start)
    # The command that was running ends promptly with an error status, it does not hang.
    status = await asyncio.wait_for(running.wait(), 5)
    assert status.exit_code != 0 and status.error_message
    # New work either fails with a typed error or (re)starts the box; it never hangs.
    try:
        execution = await asyncio.wait_for(box.exec("cat", ["/state"], stdin=False), 10)
    except boxlite.BoxliteError:
        await box.start()
        execution = await box.exec("cat", ["/state"], stdin=False)
    assert await execution.stdout().read() == "persisted\n"
    assert (await execution.wait()).exit_code == 0
    info = box.info()
    assert info.state.running and info.state.pid != pid
    await runtime.remove(box.id, force=True)


@pytest.mark.namespace_only
async def test_killed_agent_is_reported_stopped(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    box = await runtime.create(opts(busybox_rootfs, auto_remove=False))
    await (await box.exec("true", stdin=False)).wait()
    pid = box.info().state.pid
    assert pid is not None
    start = process_start_time(pid)
    os.kill(pid, signal.SIGKILL)
    await wait_dead(pid, start)
    cgroups = json.loads((runtime.home.box_dir(box.id) / "cgroups.json").read_text())["paths"].values()
    assert cgroups
    for _ in range(500):  # the box's keeper releases them, no runtime needed (issue 19)
        if not any(os.path.exists(p) for p in cgroups):
            break
        await asyncio.sleep(0.01)
    info = await runtime.get_info(box.id)
    assert info is not None and info.state.status == "stopped" and info.state.pid is None
    # Noticing the death also releases the box's host resources.
    assert not any(os.path.exists(p) for p in cgroups)
    assert (await runtime.metrics()).num_running_boxes == 0
    await box.stop()  # harmless
    await box.start()
    assert box.info().state.running
    await runtime.remove(box.id, force=True)


async def test_exec_errors_are_counted_not_fatal(box: boxlite.SimpleBox) -> None:
    with pytest.raises(boxlite.ExecError):
        await box.exec("/no/such/binary")
    with pytest.raises(boxlite.ExecError):
        await box.exec("/etc/passwd")  # not executable
    assert (await box.exec("true")).exit_code == 0
    m = await box.metrics()
    assert m.exec_errors_total >= 2


async def test_box_handle_from_shut_down_runtime_refuses_work(home: Path, busybox_rootfs: Path) -> None:
    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine="namespace"))
    box = await rt.create(opts(busybox_rootfs, auto_remove=False))
    await rt.shutdown()
    with pytest.raises(boxlite.StoppedError):
        await box.exec("true")
    with pytest.raises(boxlite.StoppedError):
        await box.start()


async def test_box_cannot_wedge_its_agent_with_a_fifo_passwd(box: boxlite.SimpleBox) -> None:
    """The box owns /etc/passwd; made a FIFO, user lookups must not block the agent."""
    assert (await box.exec("sh", "-c", "rm /etc/passwd /etc/group && busybox mkfifo /etc/passwd /etc/group")).ok
    t0 = time.monotonic()
    uid = ["grep", "^Uid:", "/proc/self/status"]  # busybox id itself would read the FIFO
    result = await asyncio.wait_for(box.exec(*uid), 10)
    assert result.stdout.split()[1] == "0"
    with pytest.raises(boxlite.ExecError, match="user"):
        await asyncio.wait_for(box.exec("true", user="user"), 10)
    assert (await asyncio.wait_for(box.exec(*uid, user="1000"), 10)).stdout.split()[1] == "1000"
    assert time.monotonic() - t0 < 5


async def test_second_stop_of_an_auto_removed_box_is_harmless(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs)))
    await box.start()
    await box.stop()
    await box.stop()
    assert await runtime.get(box.id) is None
