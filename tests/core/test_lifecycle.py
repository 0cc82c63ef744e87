"""Box lifecycle: create/start/stop/remove, persistence, names, lookup, shutdown, metrics."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

import boxlite
from boxlite.engines.base import process_start_time


def opts(rootfs: Path, **kw: object) -> boxlite.BoxOptions:
    return boxlite.BoxOptions(rootfs_path=str(rootfs), **kw)  # type: ignore[arg-type]


async def run(box: boxlite.Box, *argv: str) -> tuple[int, str]:
    execution = await box.exec(argv[0], list(argv[1:]), stdin=False)
    out = await execution.stdout().read()
    return (await execution.wait()).exit_code, out


def box_pids(runtime: boxlite.Boxlite, box_id: str) -> list[int]:
    """Host pids in the box's cgroups (empty once the box is down and cleaned)."""
    try:
        data = json.loads((runtime.home.box_dir(box_id) / "cgroups.json").read_text())
    except OSError:
        return []
    pids: set[int] = set()
    for path in data["paths"].values():
        try:
            pids.update(int(p) for p in (Path(path) / "cgroup.procs").read_text().split())
        except OSError:
            pass
    return sorted(pids)


async def box_running(runtime: boxlite.Boxlite, rootfs: Path, script: str) -> tuple[boxlite.Box, boxlite.Execution]:
    """A kept box running ``sh -c script`` once the script printed its first line ("ready"); keep
    the execution referenced (a dropped one is killed)."""
    box = await runtime.create(opts(rootfs, auto_remove=False))
    execution = await box.exec("sh", ["-c", script], stdin=False)
    async for line in execution.stdout():
        assert line == "ready\n"
        break
    return box, execution


def gone(pid: int, start: int | None = None, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = process_start_time(pid)
        if now is None or (start is not None and now != start):
            return True
        time.sleep(0.01)
    return False


async def test_writable_layer_persists_across_stop_and_start(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    box = await runtime.create(opts(busybox_rootfs, auto_remove=False))
    assert box.info().state.status == "configured"
    assert await run(box, "sh", "-c", "echo kept > /data.txt; mkdir -p /srv/a; echo deep > /srv/a/b") == (0, "")
    await box.stop()
    assert box.info().state.status == "stopped"
    await box.start()
    assert box.info().state.status == "running"
    assert await run(box, "cat", "/data.txt", "/srv/a/b") == (0, "kept\ndeep\n")
    # Deleting an image file is persisted too (overlay whiteout).
    assert (await run(box, "rm", "/bin/yes"))[0] == 0
    await box.stop()
    await box.start()
    assert (await run(box, "test", "-e", "/bin/yes"))[0] == 1
    # /tmp is a fresh tmpfs on every start.
    await run(box, "sh", "-c", "echo t > /tmp/t")
    await box.stop()
    assert (await run(box, "ls", "/tmp")) == (0, "")
    await runtime.remove(box.id, force=True)


async def test_persistence_survives_a_new_runtime(home: Path, busybox_rootfs: Path) -> None:
    rt1 = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine="namespace"))
    box = await rt1.create(opts(busybox_rootfs, auto_remove=False), name="keeper")
    await run(box, "sh", "-c", "echo 42 > /answer")
    await rt1.shutdown()
    rt2 = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine="namespace"))
    try:
        again = await rt2.get("keeper")
        assert again is not None and again.id == box.id
        assert again.info().state.status == "stopped"
        assert await run(again, "cat", "/answer") == (0, "42\n")
    finally:
        await rt2.shutdown()


async def test_a_stop_without_grace_ends_everything_and_keeps_what_was_written(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, engine: str
) -> None:
    box = await runtime.create(opts(busybox_rootfs, auto_remove=False))
    assert await run(box, "sh", "-c", "echo late > /late.txt") == (0, "")
    await box.exec("sh", ["-c", "trap '' TERM; sleep 1000 & exec sleep 1000"], stdin=False)
    info = box.info()
    pid, start = info.state.pid, process_start_time(info.state.pid or 0)
    pids = []
    deadline = time.monotonic() + 5
    while engine == "namespace" and len(pids := box_pids(runtime, box.id)) < 3:
        assert time.monotonic() < deadline, pids
        await asyncio.sleep(0.01)
    await box.stop(timeout=0)
    assert box.info().state.status == "stopped"
    assert gone(pid or 0, start, 0.5)
    for p in pids:  # namespace: the agent, both sleeps (one ignores SIGTERM)
        assert gone(p, timeout=0.5)
    await box.start()
    assert await run(box, "cat", "/late.txt") == (0, "late\n")
    await runtime.remove(box.id, force=True)


@pytest.mark.parametrize("grace", [0, 1])
async def test_a_stop_keeps_what_processes_still_running_wrote(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, grace: int
) -> None:
    """A command's writes are kept when its exec ends (a VM's agent syncs then); those of a
    process still running at the stop are kept too, written before it or in the grace (a TERM
    trap): the agent answers the stop once they are gone and the disk is synced, and only then
    may the host end a VM."""
    script = "trap 'echo asked > /asked' TERM; echo early > /early; echo ready; while true; do sleep 0.1; done"
    box, _running = await box_running(runtime, busybox_rootfs, script)  # no exec has ended (and synced) since the write
    await box.stop(timeout=grace)
    await box.start()
    assert await run(box, "cat", "/early") == (0, "early\n")
    if grace:
        assert await run(box, "cat", "/asked") == (0, "asked\n")
    await runtime.remove(box.id, force=True)


async def test_a_stop_gives_the_whole_grace_asked_for(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    """``stop(timeout=20)``: SIGTERM, then up to 20 s before SIGKILL (the agent waited 10 s at
    most); a process that needs 10.5 s to finish its work after SIGTERM finishes it."""
    script = "trap 'sleep 10.5; echo finished > /finished; exit 0' TERM; echo ready; while true; do sleep 0.1; done"
    box, _running = await box_running(runtime, busybox_rootfs, script)
    await box.stop(timeout=20)
    await box.start()
    assert await run(box, "cat", "/finished") == (0, "finished\n")
    await runtime.remove(box.id, force=True)


async def test_a_stop_sends_one_sigterm(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    """``stop`` signals each process once, as ``docker stop`` does: the agent sent SIGTERM to the
    whole box and then again to each execution's group, and a shell that had started its TERM
    trap before the second arrived ran it twice (a trap needing 10.5 s of a 20 s grace was
    killed). Three shells busy-loop, so each starts its trap within microseconds of the first."""
    counter = "trap 'n=$((n+1)); echo $n > /terms.{0}' TERM; : > /armed.{0}; while :; do :; done".format
    armed = "until [ -e /armed.1 ] && [ -e /armed.2 ]; do :; done"
    script = f"trap 'n=$((n+1)); echo $n > /terms.3' TERM; ({counter(1)}) & ({counter(2)}) & {armed}; echo ready; "
    script += "while :; do :; done"  # the execution's own shell counts too (it had three signals)
    box = await runtime.create(opts(busybox_rootfs, auto_remove=False))
    for _ in range(3):  # each round catches a second signal about half of the time
        running = await box.exec("sh", ["-c", script], stdin=False)
        async for line in running.stdout():
            assert line == "ready\n"
            break
        await box.stop(timeout=2)
        await box.start()
        assert await run(box, "sh", "-c", "cat /terms.*; rm /terms.* /armed.*") == (0, "1\n1\n1\n")
    await runtime.remove(box.id, force=True)


@pytest.mark.parametrize("hurry", ["kill", "remove"])
async def test_a_kill_or_forced_removal_does_not_wait_out_a_stop_in_progress(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, hurry: str
) -> None:
    """``stop(timeout=300)`` of a box whose shell ignores SIGTERM would hold the box for 300 s;
    ``stop(timeout=0)`` (``boxlite kill``) or ``remove(force=True)`` meanwhile ends it now, as
    ``docker kill`` ends a ``docker stop`` under way, and the slow stop returns too."""
    script = "trap '' TERM; echo ready; while true; do sleep 0.1; done"
    box, _running = await box_running(runtime, busybox_rootfs, script)
    slow = asyncio.create_task(box.stop(timeout=300))
    deadline = time.monotonic() + 20
    while (info := await runtime.get_info(box.id)) is not None and info.state.status != "stopping":
        assert time.monotonic() < deadline, "the stop never began"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # the agent got the shutdown request: the shell has had its SIGTERM
    started = time.monotonic()
    if hurry == "kill":
        await box.stop(timeout=0)
    else:
        await runtime.remove(box.id, force=True)
    assert time.monotonic() - started < 30
    await asyncio.wait_for(slow, 30)
    if hurry == "kill":
        assert (await runtime.get_info(box.id)).state.status == "stopped"  # type: ignore[union-attr]
        await runtime.remove(box.id)
    assert await runtime.get_info(box.id) is None


async def test_a_stop_timeout_that_is_not_a_number_is_refused(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    box = await runtime.create(opts(busybox_rootfs, auto_remove=False))
    await box.start()
    with pytest.raises(boxlite.ConfigError, match="NaN"):
        await box.stop(timeout=float("nan"))
    assert box.info().state.running
    await runtime.remove(box.id, force=True)


@pytest.mark.namespace_only
async def test_stop_ends_every_process_and_reports_stopped(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    box = await runtime.create(opts(busybox_rootfs, auto_remove=False))
    await box.exec("sh", ["-c", "sleep 1000 & sleep 1000"], stdin=False)
    info = box.info()
    assert info.state.running and info.state.pid
    pid, start = info.state.pid, process_start_time(info.state.pid)
    deadline = time.monotonic() + 5
    while len(pids := box_pids(runtime, box.id)) < 3:  # agent, 2 x sleep (sh execs the last)
        assert time.monotonic() < deadline, pids
        await asyncio.sleep(0.01)
    t0 = time.monotonic()
    await box.stop()
    assert time.monotonic() - t0 < 5
    assert gone(pid, start, 0.5)
    for p in pids:
        assert gone(p, timeout=0.5)
    info = await runtime.get_info(box.id)
    assert info is not None and info.state.status == "stopped" and not info.state.running
    assert info.state.pid is None
    assert not (runtime.home.box_dir(box.id) / "cgroups.json").exists()
    await box.stop()  # stopping again is harmless
    assert box.info().state.status == "stopped"


@pytest.mark.namespace_only
async def test_remove_deletes_box_dir_and_writable_layer(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    box = await runtime.create(opts(busybox_rootfs, auto_remove=False), name="doomed")
    await run(box, "sh", "-c", "echo x > /file")
    box_dir = runtime.home.box_dir(box.id)
    assert (box_dir / "upper" / "file").exists()
    await box.stop()
    await runtime.remove("doomed")
    assert not box_dir.exists()
    assert await runtime.get(box.id) is None
    assert await runtime.get_info("doomed") is None
    assert all(i.id != box.id for i in await runtime.list_info())
    with pytest.raises(boxlite.NotFoundError):
        await runtime.remove(box.id)
    # The image (here the rootfs directory, the box's lower layer) is shared and stays.
    assert (busybox_rootfs / "bin" / "busybox").is_file()


async def test_remove_running_needs_force(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    box = await runtime.create(opts(busybox_rootfs, auto_remove=False))
    await box.exec("sleep", ["1000"], stdin=False)
    pid = box.info().state.pid
    assert pid is not None
    start = process_start_time(pid)
    with pytest.raises(boxlite.InvalidStateError):
        await runtime.remove(box.id)
    assert box.info().state.running
    await runtime.remove(box.id, force=True)
    assert gone(pid, start, 2)
    assert not runtime.home.box_dir(box.id).exists()
    assert await runtime.get(box.id) is None


async def test_names_are_unique(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    first = await runtime.create(opts(busybox_rootfs, auto_remove=False), name="web")
    with pytest.raises(boxlite.AlreadyExistsError):
        await runtime.create(opts(busybox_rootfs), name="web")
    assert len(await runtime.list_info()) == 1
    await runtime.remove("web")
    second = await runtime.create(opts(busybox_rootfs, auto_remove=False), name="web")
    assert second.id != first.id and second.name == "web"
    with pytest.raises(boxlite.ConfigError):
        await runtime.create(opts(busybox_rootfs), name="bad/name")


async def test_get_get_or_create_list_and_info(runtime: boxlite.Boxlite, busybox_rootfs: Path, engine: str) -> None:
    a, created = await runtime.get_or_create(opts(busybox_rootfs, auto_remove=False), name="alpha")
    assert created
    again, created = await runtime.get_or_create(opts(busybox_rootfs, auto_remove=False), name="alpha")
    assert not created and again.id == a.id
    b = await runtime.create(opts(busybox_rootfs, auto_remove=False, memory_mib=96, cpus=0.5))
    assert a.id != b.id and len(a.id) == 12 and a.id.isalnum()
    for key in (a.id, "alpha", a.id[:10].lower()):
        found = await runtime.get(key)
        assert found is not None and found.id == a.id, key
    assert await runtime.get("nope") is None
    assert await runtime.get_info("nope") is None
    await run(b, "true")
    infos = {i.id: i for i in await runtime.list_info()}
    assert set(infos) == {a.id, b.id}
    assert infos[a.id].state.status == "configured" and infos[a.id].name == "alpha"
    assert infos[b.id].state.status == "running" and infos[b.id].state.running
    assert infos[b.id].memory_mib == 96 and infos[b.id].cpus == 0.5
    assert infos[b.id].engine == engine and not infos[b.id].detach and not infos[b.id].auto_remove
    assert infos[b.id].image == str(busybox_rootfs) and infos[b.id].started_at
    assert [i.id for i in await runtime.list_info(state="running")] == [b.id]
    info = await runtime.get_info(b.id)
    assert info is not None and info.to_dict()["state"]["status"] == "running"
    assert (await b.info()).id == b.id  # info() is awaitable too


async def test_auto_remove_box_disappears_on_stop(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    box = await runtime.create(opts(busybox_rootfs))  # auto_remove defaults to True
    assert box.info().auto_remove
    await run(box, "touch", "/x")
    box_dir = runtime.home.box_dir(box.id)
    assert box_dir.exists()
    await box.stop()
    assert not box_dir.exists()
    assert await runtime.get(box.id) is None
    with pytest.raises(boxlite.NotFoundError):
        await box.start()


async def test_simplebox_context_cleans_up(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime, name="ctx") as box:
        pid = box.info().state.pid
        assert pid is not None and (await box.exec("true")).exit_code == 0
    assert gone(pid, timeout=2)
    assert await runtime.get("ctx") is None


async def test_shutdown_stops_non_detached_boxes(home: Path, busybox_rootfs: Path) -> None:
    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine="namespace"))
    keep = await rt.create(opts(busybox_rootfs, auto_remove=False), name="keep")
    temp = await rt.create(opts(busybox_rootfs), name="temp")
    idle = await rt.create(opts(busybox_rootfs, auto_remove=False), name="idle")
    for box in (keep, temp):
        await box.exec("sleep", ["1000"], stdin=False)
    pids = [(b.info().state.pid, b.id) for b in (keep, temp)]
    cgroup_pids = box_pids(rt, keep.id) + box_pids(rt, temp.id)
    await rt.shutdown(timeout=2)
    for pid, _ in pids:
        assert pid is not None and gone(pid, timeout=1)
    for pid in cgroup_pids:
        assert gone(pid, timeout=1)
    with pytest.raises(boxlite.StoppedError):
        await rt.create(opts(busybox_rootfs))
    with pytest.raises(boxlite.StoppedError):
        await rt.get("keep")
    await rt.shutdown()  # twice is fine
    rt2 = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine="namespace"))
    try:
        states = {i.name: i.state.status for i in await rt2.list_info()}
        assert states == {"keep": "stopped", "idle": "configured"}
        assert not home.joinpath("boxes", temp.id).exists()
        assert idle.id in {i.id for i in await rt2.list_info()}
    finally:
        await rt2.shutdown()


@pytest.mark.namespace_only
async def test_metrics_count_and_measure(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    box = await runtime.create(opts(busybox_rootfs, auto_remove=False))
    idle = await box.metrics()
    assert idle.memory_bytes is None and idle.commands_executed_total == 0
    for argv in (("true",), ("false",), ("sh", "-c", "head -c 1000000 /dev/zero")):
        await run(box, *argv)
    m = await box.metrics()
    assert m.commands_executed_total == 3
    assert m.exec_errors_total == 1
    assert m.memory_bytes is not None and m.memory_bytes > 0
    assert m.pids is not None and m.pids >= 1
    assert m.cpu_time_ms is not None and m.cpu_time_ms > 0
    assert m.total_create_duration_ms is not None and m.total_create_duration_ms > 0
    assert m.bytes_received_total == 0  # only copy_out counts
    rm = await runtime.metrics()
    assert rm.num_running_boxes == 1
    assert rm.total_commands_executed == 3 and rm.total_exec_errors == 1
    assert rm.boxes_created_total >= 1
    await box.stop()
    stopped = await box.metrics()
    assert stopped.memory_bytes is None and stopped.commands_executed_total == 3
    assert (await runtime.metrics()).num_running_boxes == 0


@pytest.mark.namespace_only
async def test_concurrent_starts_of_one_box_start_it_once(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    box = await runtime.create(opts(busybox_rootfs, auto_remove=False))
    results = await asyncio.gather(*(run(box, "sh", "-c", "echo $$") for _ in range(8)))
    assert all(code == 0 for code, _ in results)
    assert box.info().state.running
    assert len([p for p in box_pids(runtime, box.id) if p != os.getpid()]) == 2  # the agent and its spawner
    await runtime.remove(box.id, force=True)
