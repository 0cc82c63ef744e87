"""``box.fork(n)`` of a running box: n new running boxes going on from its memory and disk at
one instant (a counter in memory continues in each copy from the value it had), independent of
it and of each other; the source goes on too. VM engine; the namespace engine refuses (CRIU)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import boxlite
from boxlite.errors import ConfigError, EngineError, InvalidStateError, UnsupportedOptionError

COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.05; done"


async def count(box: boxlite.Box) -> int:
    ex = await box.exec("cat", ["/tmp/count"], stdin=False)
    out = await ex.stdout().read()
    assert (await ex.wait()).exit_code == 0
    return int(out.strip())


async def test_fork_a_running_vm_box(home: Path, busybox_rootfs: Path) -> None:
    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine="vm"))
    try:
        box, before = await _counting_vm_box(rt, busybox_rootfs)
        with pytest.raises(ConfigError):
            await box.fork(0)
        kids = await box.fork(2)
        assert len(kids) == 2 and len({k.id for k in kids} | {box.id}) == 3
        for kid in kids:
            assert kid.info().state.status == "running"
            value = await count(kid)
            assert value >= before  # went on from the parent's count, not from 1
            await asyncio.sleep(0.3)
            assert await count(kid) > value  # and counts on its own
            disk = await kid.exec("cat", ["/root/disk.txt"], stdin=False)
            assert (await disk.stdout().read()) == "parent\n"
        # independent: a write in one copy is not seen by the parent or the other copy
        await (await kids[0].exec("sh", ["-c", "echo child > /root/disk.txt"])).wait()
        for other in (box, kids[1]):
            ex = await other.exec("cat", ["/root/disk.txt"], stdin=False)
            assert (await ex.stdout().read()) == "parent\n"
        assert box.info().state.status == "running" and await count(box) >= before
        box_dir = home / "boxes" / box.id
        assert not list(box_dir.rglob("vm-fork*")), "the fork's memory file is deleted"
        for kid in kids:
            await kid.stop()
            await rt.remove(kid.id, force=True)
        await box.stop()
        with pytest.raises(InvalidStateError):
            await box.fork()
    finally:
        await rt.shutdown()


async def _counting_vm_box(rt: boxlite.Boxlite, rootfs: Path) -> tuple[boxlite.Box, int]:
    box = await rt.create(boxlite.BoxOptions(rootfs_path=str(rootfs), auto_remove=False))
    await box.start()
    await (await box.exec("sh", ["-c", "echo parent > /root/disk.txt"])).wait()
    await (await box.exec("sh", ["-c", f"({COUNTER}) </dev/null >/dev/null 2>&1 &"])).wait()
    deadline = time.monotonic() + 60
    while (before := await count(box) if await _has_count(box) else 0) < 5:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    return box, before


async def test_one_copy_loads_the_memory_as_the_source_writes_it(home: Path, busybox_rootfs: Path) -> None:
    """fork(1): the copy's QEMU reads the source's memory from a pipe (no state file between)."""
    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine="vm"))
    try:
        box, before = await _counting_vm_box(rt, busybox_rootfs)
        logged = await box.exec("sh", ["-c", "echo before; sleep 2; echo after"], stdin=False)
        (kid,) = await box.fork(1)
        value = await count(kid)
        assert value >= before
        await asyncio.sleep(0.3)
        assert await count(kid) > value
        disk = await kid.exec("cat", ["/root/disk.txt"], stdin=False)
        assert (await disk.stdout().read()) == "parent\n"
        await (await kid.exec("sh", ["-c", "echo child > /root/disk.txt"])).wait()
        parent = await box.exec("cat", ["/root/disk.txt"], stdin=False)
        assert (await parent.stdout().read()) == "parent\n"
        assert (await logged.stdout().read()) == "before\nafter\n"  # the source's client goes on
        assert not list((home / "boxes").rglob("vm-fork*")) and not list((home / "boxes").rglob("vm-saved*"))
        await rt.remove(kid.id, force=True)
        await rt.remove(box.id, force=True)
    finally:
        await rt.shutdown()


async def test_a_copy_that_cannot_load_leaves_the_source_running(
    home: Path, busybox_rootfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy fails before it reads: the source's write fails at once (its pipe has no reader)
    instead of waiting for a deadline; the source goes on, no copy is left."""
    from boxlite.engines.vm.engine import VmEngine

    async def cannot_start(self: VmEngine, spec: object, stream: int | None) -> object:
        raise EngineError("this copy's QEMU could not start")

    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine="vm"))
    try:
        box, before = await _counting_vm_box(rt, busybox_rootfs)
        monkeypatch.setattr(VmEngine, "_restore", cannot_start)
        t0 = time.monotonic()
        with pytest.raises(EngineError, match="could not start"):
            await box.fork(1)
        assert time.monotonic() - t0 < 30  # the copy's deadline is 60 s: the source did not wait for it
        monkeypatch.undo()
        assert [b.id for b in await rt.list_info()] == [box.id]
        assert box.info().state.status == "running"
        value = await count(box)
        await asyncio.sleep(0.3)
        assert await count(box) > value >= before
        assert not list((home / "boxes").rglob("vm-fork*"))
        (kid,) = await box.fork(1)  # and it can be forked again
        assert await count(kid) >= value
        await rt.remove(kid.id, force=True)
        await rt.remove(box.id, force=True)
    finally:
        await rt.shutdown()


async def _has_count(box: boxlite.Box) -> bool:
    ex = await box.exec("test", ["-s", "/tmp/count"], stdin=False)
    return (await ex.wait()).exit_code == 0


def _count_pauses_and_copies(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records each pause and disk copy a fork makes (a refused fork should make none)."""
    from boxlite.runtime import pause, snapshots

    done: list[str] = []
    real_pause, real_clone = pause.pause, snapshots.clone

    async def counted_pause(*args: object, **kw: object) -> object:
        done.append("pause")
        return await real_pause(*args, **kw)  # type: ignore[arg-type]

    async def counted_clone(*args: object, **kw: object) -> object:
        done.append("clone")
        return await real_clone(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(pause, "pause", counted_pause)
    monkeypatch.setattr(snapshots, "clone", counted_clone)
    return done


@pytest.mark.namespace_only
async def test_namespace_fork_is_refused(box: boxlite.SimpleBox, monkeypatch: pytest.MonkeyPatch) -> None:
    await box.exec("true")
    done = _count_pauses_and_copies(monkeypatch)
    with pytest.raises(UnsupportedOptionError):
        await box.box.fork()
    assert done == [], "refused before the box is paused or its disk copied"
    assert box.box.info().state.status == "running"  # the source goes on
    assert (await box.exec("echo", "ok")).stdout == "ok\n"


async def test_a_box_with_published_ports_is_not_forked(
    home: Path, busybox_rootfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copies would publish the same host port: refused before the source is paused or its
    disk copied, the source goes on, nothing is left."""
    from support.hostprocs import free_port

    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine="vm"))
    try:
        opts = boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=False, ports=[(free_port(), 8080)])
        box = await rt.create(opts)
        await box.start()
        done = _count_pauses_and_copies(monkeypatch)
        for n in (1, 2):
            with pytest.raises(UnsupportedOptionError, match="published ports"):
                await box.fork(n)
            assert done == [], "refused before any pause or copy"
            assert [b.id for b in await rt.list_info()] == [box.id]
            assert box.info().state.status == "running"
            assert (await (await box.exec("true")).wait()).exit_code == 0
        assert not list((home / "boxes").rglob("vm-fork*"))
        await rt.remove(box.id, force=True)
    finally:
        await rt.shutdown()
