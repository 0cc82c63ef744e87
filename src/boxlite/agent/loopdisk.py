"""Attach a box's disk image to a loop device that detaches itself (stdlib only).

Used by the namespace engine's boot process (host root, before the box's user namespace) when a
box has ``disk_size_gb``: its writable layer lives on an ext4 image mounted in the box's own
mount namespace. The loop device is configured with ``LO_FLAGS_AUTOCLEAR`` in one
``LOOP_CONFIGURE`` call, so it is detached by the kernel as soon as nothing holds it: the fd
until the mount is made, then the mount, which dies with the box's mount namespace. A killed
host process, boot process or box therefore leaves no loop device and no host mount behind.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LO_FLAGS_AUTOCLEAR = 4
# struct loop_info64: 5 u64, 4 u32 (number, encrypt type, key size, flags), 64+64+32 bytes, 2 u64
_INFO64 = "=5Q4I64s64s32s2Q"
_ATTEMPTS = 16  # another process may take the free device between GET_FREE and CONFIGURE


def attach(image: str) -> tuple[int, str]:
    """(open fd, path) of a loop device backed by ``image``, auto-clearing. The caller mounts
    the path, then closes the fd (from then on the mount alone keeps the device)."""
    backing = os.open(image, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        info = struct.pack(_INFO64, 0, 0, 0, 0, 0, 0, 0, 0, LO_FLAGS_AUTOCLEAR, b"", b"", b"", 0, 0)
        config = struct.pack("=II", backing, 0) + info + bytes(8 * 8)
        ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        try:
            for _ in range(_ATTEMPTS):
                number = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
                path = f"/dev/loop{number}"
                dev = os.open(path, os.O_RDWR | os.O_CLOEXEC)
                try:
                    fcntl.ioctl(dev, LOOP_CONFIGURE, config)
                except OSError as e:
                    os.close(dev)
                    if e.errno == errno.EBUSY:
                        continue
                    raise OSError(e.errno, f"configuring {path} for {image}: {e.strerror}") from None
                return dev, path
        finally:
            os.close(ctl)
    finally:
        os.close(backing)  # the loop device holds its own reference to the file
    raise OSError(errno.EBUSY, "no free loop device")
