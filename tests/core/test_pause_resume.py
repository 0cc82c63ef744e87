"""box.pause()/box.resume() with memory kept, on every engine: the box's processes stop where
they are (a counter in memory goes on from its value), use no CPU while paused, exec is refused
with a typed error (or resumes the box with auto_resume), and a paused box can be stopped."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import boxlite
from boxlite.errors import InvalidStateError

# A shell loop counting in memory (a shell variable), writing each value to a file.
COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.05; done"


async def read_count(box: boxlite.SimpleBox) -> int:
    out = await box.exec("cat", "/tmp/count")
    assert out.exit_code == 0, out.stderr
    return int(out.stdout.strip())


async def counting_box(box: boxlite.SimpleBox) -> int:
    """Start the counter in the background; returns its value once it counts."""
    ex = await box.box.exec("sh", ["-c", f"({COUNTER}) </dev/null >/dev/null 2>&1 &"])
    await ex.wait()
    deadline = time.monotonic() + 60
    while True:
        out = await box.exec("cat", "/tmp/count")
        if out.exit_code == 0 and out.stdout.strip().isdigit() and int(out.stdout) >= 3:
            return int(out.stdout)
        assert time.monotonic() < deadline, "the counter never started"
        await asyncio.sleep(0.2)


async def test_counter_keeps_counting_across_pause(box: boxlite.SimpleBox, runtime: boxlite.Boxlite) -> None:
    await counting_box(box)
    await box.box.pause()
    assert box.box.info().state.status == "paused"
    assert (await runtime.get_info(box.id)).state.status == "paused"  # type: ignore[union-attr]
    # The file the counter writes is readable from the host side only through the box: resume
    # and read right away; the value must be close to the one at pause time, not reset to 0.
    await asyncio.sleep(1.0)
    await box.box.resume()
    assert box.box.info().state.status == "running"
    after = await read_count(box)
    await asyncio.sleep(0.5)
    later = await read_count(box)
    assert later > after >= 3  # continues from where it was (a fresh loop would restart at 1)


async def test_paused_box_uses_no_cpu_and_keeps_its_count(box: boxlite.SimpleBox) -> None:
    before = await counting_box(box)
    await box.box.pause()
    m1 = await box.box.metrics()
    await asyncio.sleep(1.5)
    m2 = await box.box.metrics()
    assert m1.cpu_time_ms is not None and m2.cpu_time_ms is not None
    assert m2.cpu_time_ms - m1.cpu_time_ms < 5, (m1.cpu_time_ms, m2.cpu_time_ms)
    await box.box.resume()
    # 1.5 s paused at 20 counts/s would be ~30 counts; counting resumed where it was, so far fewer.
    value = await read_count(box)
    assert before <= value < before + 25


async def test_cpu_time_is_finer_than_scheduler_ticks(box: boxlite.SimpleBox) -> None:
    """Whole 10 ms ticks would charge a stopped VM a tick whenever its main loop woke as one fell
    (and make short commands cost 0 or 10 ms): the figure is the CPU clock's nanoseconds."""
    await box.exec("sh", "-c", "i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done")
    cpu = (await box.box.metrics()).cpu_time_ms
    assert cpu is not None and cpu > 0
    assert round(cpu * 1000) % 10_000 != 0, cpu  # not a whole number of ticks (odds ~1e-7 by chance)


async def test_exec_on_paused_box_raises_typed_error(box: boxlite.SimpleBox) -> None:
    await box.exec("true")
    await box.box.pause()
    with pytest.raises(InvalidStateError, match="paused"):
        await box.exec("true")
    with pytest.raises(InvalidStateError, match="paused"):
        await box.box.start()
    await box.box.pause()  # idempotent
    await box.box.resume()
    await box.box.resume()  # idempotent
    assert (await box.exec("echo", "ok")).stdout == "ok\n"


async def test_pause_a_stopped_box_is_refused(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    b = await runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=False))
    with pytest.raises(InvalidStateError):
        await b.pause()
    with pytest.raises(InvalidStateError):
        await b.resume()
    await b.remove()


async def test_stop_and_remove_a_paused_box(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    b = await runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=False))
    await b.start()
    ex = await b.exec("sleep", ["1000"])
    await b.pause()
    t0 = time.monotonic()
    await b.stop(timeout=5)
    assert time.monotonic() - t0 < 8
    assert b.info().state.status == "stopped"
    assert (await ex.wait()).exit_code != 0
    await b.start()  # a stopped box starts again normally
    assert (await (await b.exec("echo", ["again"])).wait()).exit_code == 0
    await b.pause()
    with pytest.raises(InvalidStateError):
        await runtime.remove(b.id, force=False)
    await runtime.remove(b.id, force=True)
    assert await runtime.get_info(b.id) is None


async def test_auto_resume_resumes_on_exec(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), auto_resume=True, runtime=runtime) as box:
        await box.exec("true")
        await box.box.pause()
        assert box.box.info().state.status == "paused"
        assert (await box.exec("echo", "back")).stdout == "back\n"
        assert box.box.info().state.status == "running"


async def test_auto_pause_pauses_an_idle_box_and_auto_resume_wakes_it(
    runtime: boxlite.Boxlite, busybox_rootfs: Path
) -> None:
    async with boxlite.SimpleBox(
        rootfs_path=str(busybox_rootfs), auto_pause=1, auto_resume=True, runtime=runtime
    ) as box:
        assert box.info().auto_pause == 1 and box.info().auto_resume
        ex = await box.box.exec("sleep", ["2.5"])  # a running exec keeps it busy
        await asyncio.sleep(2.0)
        await box.metrics()  # not activity
        assert box.box.info().state.status == "running"
        await ex.wait()
        deadline = time.monotonic() + 10
        while box.box.info().state.status != "paused":
            assert time.monotonic() < deadline, "the idle box was not paused"
            await asyncio.sleep(0.1)
        assert (await box.exec("echo", "hi")).stdout == "hi\n"  # auto_resume
        assert box.box.info().state.status == "running"


OWNER = """
import asyncio, json, sys, boxlite
async def main(home, rootfs, engine):
    rt = boxlite.Boxlite(boxlite.Options(home_dir=home, engine=engine))
    box = await rt.create(boxlite.BoxOptions(rootfs_path=rootfs, auto_remove=False))
    await box.start()
    await box.exec("sleep", ["1000"])
    await box.pause()
    print(json.dumps({"id": box.id, "pid": box.info().state.pid}), flush=True)
    await asyncio.sleep(3600)
asyncio.run(main(*sys.argv[1:4]))
"""


async def test_a_paused_box_dies_with_its_owner(home: Path, busybox_rootfs: Path, engine: str) -> None:
    """A non-detached paused box still has its lifeline: frozen or stopped, it is not left behind."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from boxlite.engines.base import process_start_time

    src = Path(__file__).resolve().parents[2] / "src"
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(home), str(busybox_rootfs), engine],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(src)),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        assert line, proc.stderr.read() if proc.stderr else ""
        report = json.loads(line)
        start = process_start_time(report["pid"])
        assert start is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 30
        while process_start_time(report["pid"]) == start:
            assert time.monotonic() < deadline, "the paused box outlived its owner"
            await asyncio.sleep(0.1)
        rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine=engine))
        try:
            info = await rt.get_info(report["id"])
            assert info is not None and info.state.status == "stopped"
            await rt.remove(report["id"], force=True)
        finally:
            await rt.shutdown()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()


def test_sync_box_pauses_and_resumes(home: Path, busybox_rootfs: Path) -> None:
    with boxlite.SyncBoxlite(boxlite.Options(home_dir=str(home), engine="namespace")) as rt:
        box = rt.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=False))
        with box:
            assert box.exec("true").wait().exit_code == 0
            box.pause()
            assert box.info().state.status == "paused"
            box.resume()
            assert box.exec("true").wait().exit_code == 0
        rt.remove(box.id)


async def test_the_clock_is_right_after_a_resume(box: boxlite.SimpleBox) -> None:
    """A VM guest's clock stands still while it is stopped; the resume sets it again."""
    await box.exec("true")
    await box.box.pause()
    await asyncio.sleep(3)
    await box.box.resume()
    out = await box.exec("date", "+%s")
    assert abs(int(out.stdout) - time.time()) < 2.5


async def test_a_pause_to_disk_cut_short_is_sorted_out_by_resume(
    box: boxlite.SimpleBox, runtime: boxlite.Boxlite
) -> None:
    """The record says "paused to disk" before the save starts: a process killed during the save
    leaves a box that resume continues (its VM still there) rather than one nothing would thaw."""
    await box.exec("true")
    await box.box.pause()
    core = runtime._backend.core  # type: ignore[attr-defined]
    rec = core.db.get(box.id)
    rec.paused_to_disk = True  # what a save killed half-way leaves (the box still frozen)
    core.db.update(rec)
    assert box.box.info().state.status == "paused"
    await box.box.resume()
    assert box.box.info().state.status == "running"
    assert (await box.exec("echo", "on")).stdout == "on\n"


async def test_a_box_in_a_deep_home_pauses_and_resumes(engine: str, tmp_path: Path, busybox_rootfs: Path) -> None:
    """A home can sit deeper than a unix socket address may be long (107 bytes): pausing and
    resuming reach the box's sockets anyway (the VM engine's relay control socket)."""
    home = tmp_path / ("deep" * 16) / ("home" * 16)
    home.mkdir(parents=True)
    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine=engine))
    try:
        async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=rt) as box:
            await box.box.pause()
            assert box.box.info().state.status == "paused"
            await box.box.resume()
            assert (await box.exec("echo", "back")).stdout == "back\n"
    finally:
        await rt.shutdown(timeout=2)
