"""``disk_size_gb``: the box's writable layer is a sized disk on both engines (issue 10, item 7).

A box filling its disk gets ENOSPC, the host's disk only pays for the image, what was written
survives stop/start, and remove deletes the image. On the namespace engine the disk is an ext4
image on an auto-clearing loop device mounted in the box's mount namespace only: nothing is
mounted on the host and a kill -9 of the owning process leaves no loop device behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import boxlite
from boxlite.engines.namespace import quota

SIZE_GB = 0.05  # 51 MiB: small, the box fills it in a second
FILL_MB = 200
SRC = Path(__file__).resolve().parents[2] / "src"


def allocated(path: Path) -> int:
    """Bytes the host's filesystem really holds for everything under ``path``."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass
    return total


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


async def run(box: boxlite.Box, script: str) -> tuple[int, str]:
    """Exit code and stdout of ``sh -c script`` in ``box`` (started if stopped)."""
    execution = await box.exec("sh", ["-c", script])
    out = "".join([chunk async for chunk in execution.stdout()])
    return (await execution.wait()).exit_code, out


def host_mounts_naming(text: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if text in line]


async def test_full_disk_is_enospc_in_the_box_and_leaves_the_host_alone(
    runtime: boxlite.Boxlite, busybox_rootfs: Path
) -> None:
    box = await runtime.create(
        boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), disk_size_gb=SIZE_GB, auto_remove=False)
    )
    box_dir = runtime.home.box_dir(box.id)
    try:
        assert await run(box, "echo kept > /marker") == (0, "")
        free_before = free_bytes(box_dir)
        code, out = await run(box, f"dd if=/dev/zero of=/fill bs=1M count={FILL_MB} 2>&1")
        assert code != 0 and "No space left on device" in out, out
        code, size = await run(box, "wc -c < /fill")
        assert code == 0 and 20 << 20 < int(size) < SIZE_GB * (1 << 30), size
        # The host paid for the image at most, not for the FILL_MB the box asked to write.
        assert allocated(box_dir) <= SIZE_GB * (1 << 30) + (4 << 20), allocated(box_dir)
        assert free_before - free_bytes(box_dir) < (FILL_MB - 60) << 20
        # The box still works; freeing space lets it write again.
        assert await run(box, "rm /fill && echo again > /again") == (0, "")
        await box.stop()
        assert await run(box, "cat /marker /again") == (0, "kept\nagain\n")
    finally:
        await runtime.remove(box.id, force=True)
    assert not box_dir.exists()


async def test_disk_survives_stop_and_start(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    box = await runtime.create(
        boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), disk_size_gb=SIZE_GB, auto_remove=False)
    )
    try:
        assert await run(box, "mkdir -p /data && echo 1 > /data/f") == (0, "")
        await box.stop()
        assert await run(box, "cat /data/f") == (0, "1\n")
    finally:
        await runtime.remove(box.id, force=True)


@pytest.mark.namespace_only
async def test_namespace_disk_is_mounted_in_the_box_only(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    box = await runtime.create(
        boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), disk_size_gb=SIZE_GB, auto_remove=False)
    )
    layout = runtime.home.layout(box.id)
    try:
        code, df = await run(box, "df -k /")
        assert code == 0 and int(df.split("\n")[1].split()[1]) <= SIZE_GB * (1 << 20), df  # / is the sized disk
        assert len(quota.attached_loops(layout.disk_image)) == 1
        assert host_mounts_naming(str(layout.root)) == []  # no host mount at all
        # box root owns its root directory (the upper dir on the image)
        assert await run(box, "touch /owned && stat -c %u /owned /") == (0, "0\n0\n")
        await box.stop()
        deadline = time.monotonic() + 5
        while quota.attached_loops(layout.disk_image) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert quota.attached_loops(layout.disk_image) == []
    finally:
        await runtime.remove(box.id, force=True)
    assert not layout.disk_image.exists()


@pytest.mark.namespace_only
async def test_no_disk_size_means_no_image(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    """A box without ``disk_size_gb`` costs no mkfs and no loop device (creation stays as fast)."""
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime) as box:
        layout = runtime.home.layout(box.id)
        assert (await box.exec("echo", "ok")).stdout == "ok\n"
        assert not layout.disk_image.exists() and not layout.disk_mount.exists()
        assert quota.attached_loops(layout.disk_image) == []


OWNER = f"""
import asyncio, sys, boxlite
async def main():
    rt = boxlite.Boxlite(boxlite.Options(home_dir=sys.argv[1], engine="namespace"))
    box = await rt.create(boxlite.BoxOptions(rootfs_path=sys.argv[2], disk_size_gb={SIZE_GB!r}, auto_remove=False))
    await (await box.exec("sh", ["-c", "dd if=/dev/zero of=/f bs=1M count=4"])).wait()
    print(box.id, flush=True)
    await asyncio.sleep(600)
asyncio.run(main())
"""


@pytest.mark.namespace_only
async def test_kill_9_of_the_owner_leaves_no_loop_device_or_mount(home: Path, busybox_rootfs: Path) -> None:
    """...and the disk (ext4's journal) still holds what the box wrote when the next owner starts it."""
    loops_before = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout.count("\n")
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(home), str(busybox_rootfs)],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(SRC)),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        box_id = proc.stdout.readline().strip()
        assert box_id, "the owner did not start its box"
        image = home / "boxes" / box_id / "disk.ext4"
        assert len(quota.attached_loops(image)) == 1
        assert host_mounts_naming(box_id) == []
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 5
        while quota.attached_loops(image) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert quota.attached_loops(image) == []
        assert host_mounts_naming(box_id) == [] and host_mounts_naming(str(home)) == []
        loops_after = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout.count("\n")
        assert loops_after <= loops_before
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine="namespace"))
    try:
        box = await rt.get(box_id)
        assert box is not None
        assert await run(box, "wc -c < /f") == (0, f"{4 << 20}\n")
    finally:
        await rt.remove(box_id, force=True)
        await rt.shutdown()
    assert not image.exists()


@pytest.mark.parametrize("bad", [0, -1, 0.001, 1e9, "big", float("nan"), True])
def test_bad_disk_size_is_a_config_error(bad: object) -> None:
    with pytest.raises(boxlite.ConfigError):
        boxlite.BoxOptions(disk_size_gb=bad).validate()  # type: ignore[arg-type]


@pytest.mark.namespace_only
async def test_host_without_loop_devices_refuses_at_create(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(quota, "unsupported_reason", lambda: "the loop device driver is missing")
    with pytest.raises(boxlite.UnsupportedOptionError, match="loop device"):
        await runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), disk_size_gb=SIZE_GB))
