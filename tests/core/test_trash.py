"""Removing a box frees its name and directory at once and its disk soon after: the directory is
emptied in the background, by the time the runtime shuts down or the process exits, and what a
killed process left is emptied by the next runtime of the home."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import boxlite
from support.cli import Cli


def files_under(path: Path) -> list[str]:
    return [str(p.relative_to(path)) for p in path.rglob("*")] if path.exists() else []


async def test_a_removed_box_is_gone_at_once_and_from_the_disk_by_shutdown(home: Path, busybox_rootfs: Path) -> None:
    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home)))
    box = await rt.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=False), name="b")
    filled = await box.exec("sh", ["-c", "mkdir -p /data/a/b/c && head -c 1000000 /dev/zero > /data/a/b/c/f"])
    assert (await filled.wait()).exit_code == 0  # a deep tree for the removal to take away
    box_dir = rt.home.box_dir(box.id)
    await rt.remove(box.id, force=True)
    assert not box_dir.exists() and await rt.get("b") is None
    again = await rt.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs)), name="b")  # the name is free
    await rt.remove(again.id, force=True)
    await rt.shutdown()
    assert files_under(home / "trash") == []
    assert sorted(os.listdir(home / "boxes")) == []


async def test_what_a_killed_process_left_in_the_trash_is_emptied_by_the_next_runtime(home: Path) -> None:
    left = home / "trash" / "0123456789ab.deadbeef"
    (left / "upper" / "deep" / "er").mkdir(parents=True)
    (left / "upper" / "deep" / "er" / "file").write_bytes(b"x" * 4096)
    (left / "upper" / "link").symlink_to("/etc")  # removed, never followed
    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home)))
    await rt.shutdown()
    assert files_under(home / "trash") == [] and os.path.exists("/etc/passwd")


def test_run_rm_leaves_nothing_when_the_cli_exits(tmp_path: Path, busybox_rootfs: Path, engine: str) -> None:
    cli = Cli(tmp_path / "home", busybox_rootfs, engine)
    proc = cli("run", "--rm", "--rootfs", str(busybox_rootfs), "sh", "-c", "head -c 2000000 /dev/zero > /big")
    assert proc.returncode == 0, proc.stderr
    assert os.listdir(cli.home / "boxes") == [] and files_under(cli.home / "trash") == []
    # A plain library script that never shuts its runtime down: the interpreter's exit waits too.
    script = (
        "import asyncio, boxlite\n"
        "async def main():\n"
        f"    rt = boxlite.Boxlite(boxlite.Options(home_dir={str(cli.home)!r}))\n"
        f"    box = await rt.create(boxlite.BoxOptions(rootfs_path={str(busybox_rootfs)!r}))\n"
        "    await box.exec('true')\n"
        "    await rt.remove(box.id, force=True)\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", script], env=cli.env(), check=True, timeout=120)
    assert os.listdir(cli.home / "boxes") == [] and files_under(cli.home / "trash") == []
