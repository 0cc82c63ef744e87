"""Volumes: host directories and files in boxes (bind mounts with id-mapped ownership in
namespace boxes, virtiofs in VM boxes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import boxlite


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    path = tmp_path / "shared"
    path.mkdir()
    (path / "input.txt").write_text("from the host\n")
    return path


async def test_volume_is_shared_both_ways_with_host_ownership(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, shared: Path
) -> None:
    rt = runtime
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=rt, volumes=[(str(shared), "/data")]) as box:
        seen = await box.exec("sh", "-c", "cat /data/input.txt; stat -c %u /data/input.txt; echo out > /data/out.txt")
        assert seen.stdout == "from the host\n0\n"
        assert seen.exit_code == 0
    assert (shared / "out.txt").read_text() == "out\n"
    assert (shared / "out.txt").stat().st_uid == os.getuid()  # box root writes as the host owner
    assert not _serving(shared), "a virtiofsd outlived its box"


def _serving(path: Path) -> bool:
    """Does some process (a VM box's virtiofsd) still serve ``path``?"""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if f"source={path}".encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            pass
    return False


async def test_read_only_volume_and_single_file(runtime: boxlite.Boxlite, busybox_rootfs: Path, shared: Path) -> None:
    (shared / "sibling.txt").write_text("not for the box\n")
    volumes = [f"{shared}:/ro:ro", (str(shared / "input.txt"), "/etc/motd", True)]
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime, volumes=volumes) as box:
        result = await box.exec("sh", "-c", "cat /etc/motd; touch /ro/x || echo denied; touch /etc/motd || echo denied")
        assert result.stdout == "from the host\ndenied\ndenied\n"
        # a file volume brings that file only, not its directory
        search = "grep -rl 'not for the box' / --exclude-dir=proc --exclude-dir=sys --exclude-dir=ro"
        found = await box.exec("sh", "-c", search)
        assert found.stdout == ""
    assert not (shared / "x").exists()


async def test_volume_errors_are_clear(home: Path, busybox_rootfs: Path, tmp_path: Path) -> None:
    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine="namespace"))
    # A missing host path is an error when the box starts (as in BoxLite), not at create.
    later = await rt.create(
        boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), volumes=[(str(tmp_path / "nope"), "/x")])
    )
    with pytest.raises(boxlite.ConfigError, match="does not exist"):
        await later.start()
    with pytest.raises(boxlite.ConfigError, match="absolute"):
        await rt.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), volumes=[(str(tmp_path), "rel")]))
    with pytest.raises(boxlite.ConfigError, match="mode"):
        await rt.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), volumes=[(str(tmp_path), "/x", "rx")]))
    assert await rt.list_info() == []
    await rt.shutdown()


async def test_image_symlink_cannot_redirect_a_volume(runtime: boxlite.Boxlite, tmp_path: Path, shared: Path) -> None:
    """A box path through a symlink of the image (here /escape -> /) is refused, not followed."""
    from support.images import build_busybox_rootfs

    rootfs = build_busybox_rootfs(tmp_path / "evil")
    os.symlink("/", rootfs / "escape")
    rt = runtime
    box = await rt.create(boxlite.BoxOptions(rootfs_path=str(rootfs), volumes=[(str(shared), "/escape/usr/lib")]))
    with pytest.raises(boxlite.EngineError, match="symlink"):
        await box.start()


async def test_two_boxes_with_volumes_run_at_once(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, tmp_path: Path
) -> None:
    """Volume boxes do not collide on the host (VM: virtiofsd keeps a host-wide lock file named
    after its socket; two boxes' sockets once had the same name and the second box failed)."""
    dirs = [tmp_path / "a", tmp_path / "b"]
    for i, d in enumerate(dirs):
        d.mkdir()
        (d / "name").write_text(f"box{i}\n")
    rootfs = str(busybox_rootfs)
    async with (
        boxlite.SimpleBox(rootfs_path=rootfs, runtime=runtime, volumes=[(str(dirs[0]), "/data")]) as first,
        boxlite.SimpleBox(rootfs_path=rootfs, runtime=runtime, volumes=[(str(dirs[1]), "/data")]) as second,
    ):
        assert (await first.exec("cat", "/data/name")).stdout == "box0\n"
        assert (await second.exec("cat", "/data/name")).stdout == "box1\n"
