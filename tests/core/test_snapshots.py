"""Disk snapshots and clones (issue 11), on every engine: box.snapshot.create/list/get/restore/
remove and box.clone_box, their errors, their cost, and a host process killed in the middle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import boxlite
from boxlite.engines import diskchain
from boxlite.engines.base import process_start_time
from boxlite.errors import AlreadyExistsError, ConfigError, InvalidStateError, NotFoundError

SRC = Path(__file__).resolve().parents[2] / "src"


def opts(rootfs: Path, **kw: object) -> boxlite.BoxOptions:
    return boxlite.BoxOptions(rootfs_path=str(rootfs), auto_remove=False, **kw)  # type: ignore[arg-type]


async def sh(box: boxlite.Box, script: str) -> tuple[int, str]:
    execution = await box.exec("sh", ["-c", script], stdin=False)
    out = await execution.stdout().read()
    return (await execution.wait()).exit_code, out


def leftovers(home: Path) -> list[str]:
    """Half-built boxes, temporary state files and layers no state names."""
    found = [p.name for p in (home / "boxes").iterdir() if p.name.startswith(".")]
    for box in (home / "boxes").iterdir():
        found += [str(p) for p in (box / "snap").glob(".state.*")]
        state = diskchain.read_state(box)
        named = state.referenced() if state is not None else set()
        for layer in (box / "snap" / "layers").glob("*"):
            if layer.name.removesuffix(".qcow2") not in named:
                found.append(str(layer))
    return found


async def test_snapshot_restore_brings_back_the_disk(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    box = await runtime.create(opts(busybox_rootfs))
    assert (await sh(box, "echo one > /root/f; rm /bin/ls"))[0] == 0
    await box.stop()
    info = await box.snapshot.create(name="s1")
    assert (info.name, info.box_id) == ("s1", box.id)
    assert (await sh(box, "echo two > /root/f; echo new > /root/g; rm /etc/group"))[0] == 0
    await box.stop()
    await box.snapshot.create(name="s2")
    assert [s.name for s in await box.snapshot.list()] == ["s1", "s2"]
    await box.snapshot.restore("s1")
    script = "cat /root/f; test -e /root/g || echo no-g; test -e /bin/ls || echo no-ls; test -e /etc/group && echo g"
    assert await sh(box, script) == (0, "one\nno-g\nno-ls\ng\n")
    await box.stop()
    await box.snapshot.restore("s2")
    assert await sh(box, "cat /root/f /root/g; test -e /etc/group || echo no-group") == (0, "two\nnew\nno-group\n")
    await box.stop()
    await box.snapshot.remove("s1")
    assert await box.snapshot.get("s1") is None
    assert (await box.snapshot.get("s2")) is not None
    assert await sh(box, "cat /root/f") == (0, "two\n")  # removing a snapshot leaves the box as it is
    assert leftovers(runtime.home.root) == []


async def test_restoring_a_running_box_is_refused_and_changes_nothing(
    runtime: boxlite.Boxlite, busybox_rootfs: Path
) -> None:
    box = await runtime.create(opts(busybox_rootfs))
    await box.start()
    await box.stop()
    await box.snapshot.create(name="empty")
    assert (await sh(box, "echo kept > /root/f"))[0] == 0
    with pytest.raises(InvalidStateError, match="stop it"):
        await box.snapshot.restore("empty")
    assert box.info().state.status == "running"
    assert await sh(box, "cat /root/f") == (0, "kept\n")


async def test_snapshot_of_a_running_box_is_consistent_and_the_box_keeps_running(
    runtime: boxlite.Boxlite, busybox_rootfs: Path
) -> None:
    box = await runtime.create(opts(busybox_rootfs))
    assert (await sh(box, "echo before > /root/f; sync"))[0] == 0
    await box.snapshot.create(name="live")
    assert box.info().state.status == "running"
    assert (await sh(box, "echo after > /root/f"))[0] == 0
    await box.stop()
    await box.snapshot.restore("live")
    assert await sh(box, "cat /root/f") == (0, "before\n")


async def test_snapshot_names_and_errors(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    box = await runtime.create(opts(busybox_rootfs))
    for bad in ("", "a/b", "..", "x" * 129, "a\nb"):
        with pytest.raises(ConfigError):
            await box.snapshot.create(name=bad)
    await box.snapshot.create(name="one")
    with pytest.raises(AlreadyExistsError):
        await box.snapshot.create("one")  # positional too (BoxLite's reference server passes it so)
    with pytest.raises(ConfigError):
        await box.snapshot.create()
    with pytest.raises(NotFoundError):
        await box.snapshot.restore("nope")
    with pytest.raises(NotFoundError):
        await box.snapshot.remove("nope")
    assert [s.name for s in await box.snapshot.list()] == ["one"]


async def test_snapshot_create_costs_the_same_whatever_the_box_wrote(
    runtime: boxlite.Boxlite, busybox_rootfs: Path
) -> None:
    """Copy-on-write: no copy of the writable layer (16 MiB here would take far longer to copy
    on a loaded machine than the bound; the bound is loose for shared CI CPUs)."""
    box = await runtime.create(opts(busybox_rootfs))
    assert (await sh(box, "head -c 16777216 /dev/urandom > /root/big; sync"))[0] == 0
    await box.stop()
    times = []
    for i in range(3):
        t0 = time.monotonic()
        await box.snapshot.create(name=f"s{i}")
        times.append(time.monotonic() - t0)
        await box.start()  # each snapshot freezes a layer the box wrote to
        assert (await sh(box, f"echo {i} >> /root/log"))[0] == 0
        await box.stop()
    assert min(times) < 0.5, times
    assert all(s.size_bytes >= 0 for s in await box.snapshot.list())


async def test_clone_is_independent_stopped_or_running(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    src = await runtime.create(opts(busybox_rootfs), name="src")
    assert (await sh(src, "echo source > /root/f"))[0] == 0
    running_clone = await src.clone_box(name="c1")  # running source: frozen, copied, thawed
    assert src.info().state.status == "running"
    assert running_clone.info().state.status in ("stopped", "configured")
    assert running_clone.name == "c1" and running_clone.id != src.id
    await src.stop()
    stopped_clone = await src.clone_box()
    for clone in (running_clone, stopped_clone):
        assert await sh(clone, "cat /root/f; echo mine > /root/f") == (0, "source\n")
        await clone.stop()
    assert await sh(src, "cat /root/f") == (0, "source\n")
    assert await sh(running_clone, "cat /root/f") == (0, "mine\n")
    await src.remove()  # a clone shares no state with its source
    assert await sh(stopped_clone, "cat /root/f") == (0, "mine\n")
    with pytest.raises(AlreadyExistsError):
        await running_clone.clone_box(name="c1")
    assert leftovers(runtime.home.root) == []


async def test_clone_of_a_running_box_removed_when_it_stops_holds_what_its_commands_wrote(
    runtime: boxlite.Boxlite, busybox_rootfs: Path
) -> None:
    """Such a box's disk is not flushed after each command (a VM's agent skips it: the disk is
    deleted at the stop); a copy of the running box asks the agent to flush it first, which
    needs no ``sync`` program in the image."""
    src = await runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=True))
    write = "rm /bin/sync && head -c 1048576 /dev/urandom > /root/data && md5sum /root/data"
    code, digest = await sh(src, write)
    assert code == 0 and len(digest.split()[0]) == 32
    clone = await src.clone_box(name="copy")  # within a second of the write: no writeback yet
    assert src.info().state.status == "running"
    await src.stop()  # removed
    assert await sh(clone, "md5sum /root/data") == (0, digest)
    await clone.stop()


KILLER = """
import asyncio, os, signal, sys
sys.path.insert(0, {src!r})
import boxlite
from boxlite.engines import diskchain
from boxlite.runtime import archive, snapshots

def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)

point = {point!r}
async def main():
    rt = boxlite.Boxlite(boxlite.Options(home_dir={home!r}))
    box = await rt.get({box_id!r})
    if point == "clone":
        snapshots.link_layer = die  # after the source froze, while the clone is half built
        await box.clone_box(name="half")
    elif point == "snapshot":
        diskchain.write_state = die  # the new writable layer exists, the state does not name it
        await box.snapshot.create(name="half")
    elif point == "export":
        archive._Writer.file = lambda self, rel, *a, **k: die()  # the temporary archive exists
        await box.export(dest={dest!r})
    elif point == "import":
        archive.apply_meta = die
        archive.check_vm_disk = die
        await rt.import_box({dest!r} + "/src.boxlite", name="half")
asyncio.run(main())
"""


@pytest.mark.parametrize("point", ["snapshot", "clone", "export", "import"])
async def test_kill_9_in_the_middle_leaves_the_source_intact_and_no_garbage(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, tmp_path: Path, engine: str, point: str
) -> None:
    src = await runtime.create(opts(busybox_rootfs), name="src")
    assert (await sh(src, "echo precious > /root/f"))[0] == 0
    await src.stop()
    out = tmp_path / "out"
    out.mkdir()
    if point == "import":
        await src.export(dest=str(out))
    before = sorted(p.name for p in runtime.home.boxes_dir.iterdir())
    home = str(runtime.home.root)
    script = KILLER.format(src=str(SRC), point=point, home=home, box_id=src.id, dest=str(out))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    await runtime.shutdown()
    rt = boxlite.Boxlite(boxlite.Options(home_dir=home, engine=engine))  # opening the home cleans up
    try:
        assert await rt.get("half") is None
        assert leftovers(Path(home)) == []
        assert sorted(p.name for p in rt.home.boxes_dir.iterdir()) == before
        assert [p.name for p in out.iterdir() if p.name != "src.boxlite"] == []
        box = await rt.get("src")
        assert box is not None
        assert await sh(box, "cat /root/f") == (0, "precious\n")
    finally:
        await rt.shutdown()


async def test_opening_a_home_deletes_leftovers_of_dead_processes_only(home: Path) -> None:
    """A dead server's upload, a dead process's half-built box; a live owner's are kept."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_token = f"{dead.stdout.strip()} 1"
    live_token = f"{os.getpid()} {process_start_time(os.getpid())}"
    for parent, name in ((home / "transfers", "up"), (home / "boxes", ".partial-AAAAAAAAAAAA")):
        for owner, suffix in ((dead_token, "dead"), (live_token, "live")):
            d = parent / f"{name}{suffix}"
            d.mkdir(parents=True)
            (d / ".owner").write_text(owner)
            (d / "data").write_bytes(b"x" * 1000)
    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home)))
    try:
        await rt.list_info()
        assert sorted(p.name for p in (home / "transfers").iterdir()) == ["uplive"]
        assert [p.name for p in (home / "boxes").iterdir()] == [".partial-AAAAAAAAAAAAlive"]
    finally:
        await rt.shutdown()
