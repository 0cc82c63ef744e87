"""Volumes: host directories and files bind-mounted into namespace boxes, ownership id-mapped."""

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
    home: Path, busybox_rootfs: Path, shared: Path
) -> None:
    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine="namespace"))
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=rt, volumes=[(str(shared), "/data")]) as box:
        seen = await box.exec("sh", "-c", "cat /data/input.txt; stat -c %u /data/input.txt; echo out > /data/out.txt")
        assert seen.stdout == "from the host\n0\n"
        assert seen.exit_code == 0
    assert (shared / "out.txt").read_text() == "out\n"
    assert (shared / "out.txt").stat().st_uid == os.getuid()  # box root writes as the host owner
    await rt.shutdown()


async def test_read_only_volume_and_single_file(home: Path, busybox_rootfs: Path, shared: Path) -> None:
    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine="namespace"))
    volumes = [f"{shared}:/ro:ro", (str(shared / "input.txt"), "/etc/motd", True)]
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=rt, volumes=volumes) as box:
        result = await box.exec("sh", "-c", "cat /etc/motd; touch /ro/x || echo denied; touch /etc/motd || echo denied")
        assert result.stdout == "from the host\ndenied\ndenied\n"
    assert not (shared / "x").exists()
    await rt.shutdown()


async def test_volume_errors_are_clear(home: Path, busybox_rootfs: Path, tmp_path: Path) -> None:
    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine="namespace"))
    with pytest.raises(boxlite.ConfigError, match="does not exist"):
        await rt.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), volumes=[(str(tmp_path / "nope"), "/x")]))
    with pytest.raises(boxlite.ConfigError, match="absolute"):
        await rt.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), volumes=[(str(tmp_path), "rel")]))
    with pytest.raises(boxlite.ConfigError, match="mode"):
        await rt.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), volumes=[(str(tmp_path), "/x", "rx")]))
    assert await rt.list_info() == []
    await rt.shutdown()


async def test_image_symlink_cannot_redirect_a_volume(home: Path, tmp_path: Path, shared: Path) -> None:
    """A box path through a symlink of the image (here /escape -> /) is refused, not followed."""
    from support.images import build_busybox_rootfs

    rootfs = build_busybox_rootfs(tmp_path / "evil")
    os.symlink("/", rootfs / "escape")
    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine="namespace"))
    box = await rt.create(boxlite.BoxOptions(rootfs_path=str(rootfs), volumes=[(str(shared), "/escape/usr/lib")]))
    with pytest.raises(boxlite.EngineError, match="symlink"):
        await box.start()
    await rt.shutdown()
