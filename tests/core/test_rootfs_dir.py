"""A plain directory as a box's root filesystem (``rootfs_path``): what the box sees of it, that
the box never writes it, and, on the namespace engine, that it is mounted in place (no copy,
no walk of the tree at create) wherever its file system can be id-mapped."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import boxlite
from boxlite.errors import BoxliteError
from boxlite.images.rootfs import live_root, parse_mountinfo_line
from support.images import build_busybox_rootfs


def opts(rootfs: Path, **kw: object) -> boxlite.BoxOptions:
    return boxlite.BoxOptions(rootfs_path=str(rootfs), auto_remove=False, **kw)  # type: ignore[arg-type]


async def run(box: boxlite.Box, *argv: str) -> tuple[int, str]:
    execution = await box.exec(argv[0], list(argv[1:]), stdin=False)
    out = await execution.stdout().read()
    return (await execution.wait()).exit_code, out


def stored_layers(home: Path) -> set[str]:
    """Layer dirs in the home's image store (a copied rootfs directory adds one)."""
    return {str(p) for p in home.glob("images/layers*/*")}


async def test_box_writes_never_reach_the_directory_and_new_boxes_see_host_edits(
    runtime: boxlite.Boxlite, tmp_path: Path
) -> None:
    rootfs = build_busybox_rootfs(tmp_path / "rootfs")
    (rootfs / "etc" / "motd").write_text("first\n")
    before = sorted(str(p.relative_to(rootfs)) for p in rootfs.rglob("*"))
    box = await runtime.create(opts(rootfs))
    try:
        assert await run(box, "cat", "/etc/motd") == (0, "first\n")
        script = "echo box > /etc/motd; rm /bin/yes; mkdir /srv/new; echo x > /root/x; chmod 700 /etc"
        assert (await run(box, "sh", "-c", script))[0] == 0
        assert (rootfs / "etc" / "motd").read_text() == "first\n"
        assert (rootfs / "bin" / "yes").is_symlink()
        assert sorted(str(p.relative_to(rootfs)) for p in rootfs.rglob("*")) == before
        assert (rootfs / "etc").stat().st_mode & 0o777 == 0o755
    finally:
        await runtime.remove(box.id, force=True)
    # An edit in place (only the file's ctime changes) reaches the next box.
    with open(rootfs / "etc" / "motd", "a") as f:
        f.write("second\n")
    again = await runtime.create(opts(rootfs))
    try:
        assert await run(again, "cat", "/etc/motd") == (0, "first\nsecond\n")
    finally:
        await runtime.remove(again.id, force=True)


@pytest.mark.namespace_only
async def test_namespace_box_mounts_the_directory_in_place(
    runtime: boxlite.Boxlite, home: Path, tmp_path: Path
) -> None:
    rootfs = build_busybox_rootfs(tmp_path / "rootfs")
    (rootfs / "home" / "user" / "notes").write_text("mine\n")
    os.chown(rootfs / "home" / "user" / "notes", 1000, 1000)
    (rootfs / "far").write_text("far\n")
    os.chown(rootfs / "far", 70000, 70000)  # no box can map this id: reads as nobody
    store_before = stored_layers(home)
    box = await runtime.create(opts(rootfs))
    try:
        assert stored_layers(home) == store_before  # nothing copied
        assert await run(box, "stat", "-c", "%u:%g", "/home/user/notes", "/far", "/bin/busybox") == (
            0,
            "1000:1000\n65534:65534\n0:0\n",
        )
        # The directory is the box's lower layer: an edit on the host shows in the running box
        # for files the box has not changed itself.
        (rootfs / "etc" / "motd").write_text("live\n")
        assert await run(box, "cat", "/etc/motd") == (0, "live\n")
        assert (await run(box, "sh", "-c", "echo own > /etc/hostname"))[0] == 0
        (rootfs / "etc" / "hostname").write_text("host edit\n")
        assert await run(box, "cat", "/etc/hostname") == (0, "own\n")
        # Box root cannot write through to the host directory, nor see where it is.
        assert (await run(box, "sh", "-c", "echo x > /home/user/notes"))[0] == 0  # copied up
        assert (rootfs / "home" / "user" / "notes").read_text() == "mine\n"
        assert (await run(box, "sh", "-c", "echo x > /far"))[0] != 0  # an id the box cannot map
        assert (rootfs / "far").read_text() == "far\n"
        code, mounts = await run(box, "cat", "/proc/self/mountinfo")
        assert code == 0 and str(rootfs) not in mounts and str(tmp_path) not in mounts
        # Stop, start: the same directory, the box's own changes kept.
        await box.stop()
        await box.start()
        assert await run(box, "cat", "/etc/hostname", "/etc/motd") == (0, "own\nlive\n")
    finally:
        await runtime.remove(box.id, force=True)
    assert (rootfs / "far").read_text() == "far\n"
    assert (rootfs / "home" / "user" / "notes").read_text() == "mine\n"


@pytest.mark.namespace_only
async def test_a_removed_directory_is_a_clear_error_at_start(runtime: boxlite.Boxlite, tmp_path: Path) -> None:
    rootfs = build_busybox_rootfs(tmp_path / "rootfs")
    box = await runtime.create(opts(rootfs))
    try:
        assert await run(box, "echo", "up") == (0, "up\n")
        await box.stop()
        shutil.rmtree(rootfs)
        with pytest.raises(BoxliteError, match=r"rootfs directory .* is missing"):
            await box.start()
        build_busybox_rootfs(rootfs)  # back: the box starts again, its own layer intact
        await box.start()
        assert await run(box, "echo", "again") == (0, "again\n")
    finally:
        await runtime.remove(box.id, force=True)


@pytest.fixture
def ramfs_dir(tmp_path: Path) -> Iterator[Path]:
    """A ramfs mount: a file system Linux cannot id-map."""
    where = tmp_path / "ram"
    where.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "ramfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.namespace_only
async def test_directory_on_a_file_system_without_idmapping_is_copied(
    runtime: boxlite.Boxlite, home: Path, ramfs_dir: Path
) -> None:
    rootfs = build_busybox_rootfs(ramfs_dir / "rootfs")
    assert live_root(rootfs) is None
    store_before = stored_layers(home)
    box = await runtime.create(opts(rootfs))
    try:
        assert len(stored_layers(home) - store_before) == 1  # the copy
        (rootfs / "etc" / "hostname").write_text("changed on the host\n")
        assert await run(box, "cat", "/etc/hostname") == (0, "box\n")  # the copy, not the directory
    finally:
        await runtime.remove(box.id, force=True)


def test_directories_holding_mounts_are_copied(ramfs_dir: Path, tmp_path: Path) -> None:
    assert live_root(tmp_path / "elsewhere" / ".." / "ram" / "..") is None  # tmp_path holds the mount
    plain = tmp_path / "plain"
    plain.mkdir()
    found = live_root(plain)
    assert found is not None and found[0] == plain.resolve()
    assert found[1].startswith("rootfs:dir-")


def test_mountinfo_lines_are_parsed_with_escapes() -> None:
    line = "36 35 98:0 /mnt1 /mnt\\040with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue"
    assert parse_mountinfo_line(line) == ("98:0", "/mnt with space", "ext3")
    assert parse_mountinfo_line("garbage") == ("", "", "")
