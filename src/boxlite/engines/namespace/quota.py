"""``disk_size_gb`` on the namespace engine: the box's writable layer on a sized ext4 image.

Without ``disk_size_gb`` the overlay's upper and work dirs are plain directories in the box dir
(no mkfs, no loop device: creating such a box costs nothing more). With it, a sparse ext4 image
``<box>/disk.ext4`` of ``disk_size_gb`` GiB (2**30 bytes, as the VM engine's disk) holds them;
the boot process attaches it to an auto-clearing loop device and mounts it inside the box's own
mount namespace (``agent/loopdisk.py``, ``agent/nsboot.py``), so a full disk is ENOSPC in the box
and never fills the host's, and no host mount or loop device outlives the box. The image stays
between stop and start and goes with the box dir on remove.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from ...errors import EngineError
from ...layout import BoxLayout

GIB = 1 << 30
MIN_BYTES = 16 << 20  # smaller than this, ext4's own metadata leaves next to nothing for the box
DETACH_WAIT = 5.0
"""Longest wait at start for the previous run's loop device to be released (the kernel tears the
old mount namespace down asynchronously): one image is never mounted twice at once."""


def image_bytes(size_gb: float) -> int:
    """The image size for ``disk_size_gb`` (GiB), at least MIN_BYTES, a multiple of 4 KiB."""
    return max(MIN_BYTES, int(size_gb * GIB) // 4096 * 4096)


def ensure_image(path: Path, size_gb: float, uid_base: int) -> bool:
    """Create the box's sparse ext4 image unless it exists (True if created). Its root directory
    belongs to the box's root user; the upper and work dirs are made on first mount."""
    if path.exists():
        return False
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        os.ftruncate(fd, image_bytes(size_gb))
    finally:
        os.close(fd)
    argv = [
        "mke2fs", "-q", "-F", "-t", "ext4", "-m", "0", "-L", "boxlite-upper",
        "-E", f"root_owner={uid_base}:{uid_base},lazy_itable_init=1,lazy_journal_init=1,nodiscard",
        str(tmp),
    ]  # fmt: skip
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        tmp.unlink(missing_ok=True)
        raise EngineError(f"cannot create the box disk (mke2fs from e2fsprogs): {e}") from None
    if res.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise EngineError(f"mke2fs failed creating the box disk: {res.stderr.strip()[-2000:]}")
    os.rename(tmp, path)
    return True


def attached_loops(path: Path) -> list[str]:
    """Loop devices whose backing file is ``path`` (from sysfs)."""
    target = os.path.realpath(path)
    out = []
    try:
        devices = [d for d in os.listdir("/sys/block") if d.startswith("loop")]  # (no glob: one module less per `run`)
    except OSError:
        devices = []
    for name in (f"/sys/block/{d}/loop/backing_file" for d in devices):
        try:
            with open(name) as f:
                backing = f.read().strip()
        except OSError:
            continue
        if backing.removesuffix(" (deleted)") == target:
            out.append("/dev/" + name.split("/")[3])
    return out


def wait_detached(path: Path, timeout: float = DETACH_WAIT) -> None:
    """Return once no loop device is backed by ``path``; EngineError after ``timeout`` (mounting
    an ext4 image a second time while it is still mounted would corrupt it)."""
    deadline = time.monotonic() + timeout
    while (loops := attached_loops(path)) and time.monotonic() < deadline:
        time.sleep(0.01)
    if loops:
        raise EngineError(f"the box disk {path} is still attached to {', '.join(loops)} (a previous run not yet gone?)")


def boot_config(layout: BoxLayout, size_gb: float, uid_base: int) -> dict[str, object]:
    """What the boot process needs to put the box's writable layer on its disk image (creating
    the image on the box's first start): replaces ``upperdir``/``workdir`` of its config."""
    ensure_image(layout.disk_image, size_gb, uid_base)
    wait_detached(layout.disk_image)
    layout.disk_mount.mkdir(mode=0o700, exist_ok=True)
    return {
        "disk_image": str(layout.disk_image),
        "disk_mount": str(layout.disk_mount),
        "upperdir": str(layout.disk_mount / "upper"),
        "workdir": str(layout.disk_mount / "work"),
        # the image's upper dir gets the mode the engine gave the plain one (the image's bottom layer's)
        "upper_mode": layout.upper.stat().st_mode & 0o7777,
    }


def unsupported_reason() -> str | None:
    """Why this host cannot give namespace boxes a sized disk (None: it can)."""
    if not os.path.exists("/dev/loop-control"):
        return "the loop device driver is missing (/dev/loop-control; modprobe loop)"
    if shutil.which("mke2fs") is None:
        return "mke2fs is missing (install the Debian package e2fsprogs)"
    return None
