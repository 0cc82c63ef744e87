"""A box removed when it stops (``auto_remove``, ``boxlite run --rm``) has a throwaway writable
layer: the namespace engine mounts it ``volatile``, so that its teardown does not flush every
dirty page of the host's file system (each removal waited ~0.5 s while another process wrote:
docs/performance.md). A box that outlives its stop keeps a durable layer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import boxlite
from boxlite.layout import BoxLayout

pytestmark = pytest.mark.namespace_only


async def root_mount_options(box: boxlite.Box) -> str:
    execution = await box.exec("sh", ["-c", "grep '^overlay / ' /proc/self/mounts"], stdin=False)
    out = await execution.stdout().read()
    assert (await execution.wait()).exit_code == 0, out
    return out


async def test_only_a_box_removed_when_it_stops_has_a_volatile_writable_layer(
    runtime: boxlite.Boxlite, busybox_rootfs: Path
) -> None:
    throwaway = await runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=True))
    kept = await runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=False))
    try:
        assert "volatile" in await root_mount_options(throwaway)
        assert "volatile" not in await root_mount_options(kept)
        written = await kept.exec("sh", ["-c", "echo kept > /note"], stdin=False)
        assert (await written.wait()).exit_code == 0  # written before the stop, not raced by it
        await kept.stop()
        await kept.start()  # its layer, written durably, is mounted again as it was
        assert "volatile" not in await root_mount_options(kept)
        execution = await kept.exec("cat", ["/note"], stdin=False)
        assert await execution.stdout().read() == "kept\n"
        assert (await execution.wait()).exit_code == 0
    finally:
        for box in (throwaway, kept):
            await runtime.remove(box.id, force=True)


async def test_a_volatile_layer_left_by_a_crash_does_not_keep_the_box_from_starting(
    runtime: boxlite.Boxlite, busybox_rootfs: Path
) -> None:
    """The kernel leaves ``work/incompat/volatile`` in the work directory of every volatile mount
    and refuses that directory while it is there (it cannot tell a crash from a clean unmount)."""
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=True))
    try:
        marker = BoxLayout(runtime.home.box_dir(box.id)).work / "work" / "incompat" / "volatile"
        marker.mkdir(parents=True)
        for path in (marker, marker.parent, marker.parent.parent):
            os.chmod(path, 0)  # as overlayfs makes them
        execution = await box.exec("sh", ["-c", "echo ok > /f && cat /f"], stdin=False)
        assert await execution.stdout().read() == "ok\n"
        assert "volatile" in await root_mount_options(box)
    finally:
        await runtime.remove(box.id, force=True)
