"""Device nodes that come with an image (or that box root makes) are inert in the box."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import boxlite
from support.images import build_busybox_rootfs


async def test_device_nodes_in_the_image_cannot_be_opened(home: Path, tmp_path: Path) -> None:
    rootfs = build_busybox_rootfs(tmp_path / "rootfs")
    os.mknod(rootfs / "kmem", 0o666 | stat.S_IFCHR, os.makedev(1, 1))  # /dev/mem's numbers
    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine="namespace"))
    async with boxlite.SimpleBox(rootfs_path=str(rootfs), runtime=rt) as box:
        # The directory is the box's lower layer in place: the node shows, on nodev mounts only.
        listed = await box.exec("ls", "-l", "/kmem")
        assert listed.exit_code == 0 and listed.stdout.startswith("c"), listed
        opened = await box.exec("head", "-c", "1", "/kmem")
        assert opened.exit_code != 0 and "denied" in opened.stderr, opened
        written = await box.exec("sh", "-c", "echo x > /kmem")
        assert written.exit_code != 0, written
        made = await box.exec("busybox", "mknod", "/tmp/null2", "c", "1", "3")
        assert made.exit_code != 0
        assert (await box.exec("sh", "-c", "echo ok > /dev/null && echo fine")).stdout == "fine\n"
    await rt.shutdown()
