"""Deterministic writer for uncompressed ``newc`` cpio archives (Linux initramfs format)."""

from __future__ import annotations

import stat
from dataclasses import dataclass
from typing import BinaryIO


@dataclass(frozen=True)
class Entry:
    """One archive member. ``data`` is file content or a symlink target."""

    path: str
    mode: int  # full st_mode (type bits + permissions)
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def _header(ino: int, e: Entry, nlink: int, size: int, name: bytes) -> bytes:
    fields = (
        ino,
        e.mode,
        0,
        0,
        nlink,
        0,
        size,
        0,
        0,
        e.rdev[0],
        e.rdev[1],
        len(name) + 1,
        0,
    )
    return b"070701" + b"".join(b"%08X" % v for v in fields)


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def write_cpio(out: BinaryIO, entries: list[Entry]) -> None:
    """Write ``entries`` sorted by path, owner 0:0, mtime 0, sequential inode numbers."""
    for ino, e in enumerate(sorted(entries, key=lambda x: x.path), start=1):
        name = e.path.lstrip("/").encode()
        data = e.data if (stat.S_ISREG(e.mode) or stat.S_ISLNK(e.mode)) else b""
        nlink = 2 if stat.S_ISDIR(e.mode) else 1
        hdr = _header(ino, e, nlink, len(data), name)
        out.write(hdr + name + b"\0" + _pad(len(hdr) + len(name) + 1))
        out.write(data + _pad(len(data)))
    trailer = Entry("TRAILER!!!", 0)
    name = trailer.path.encode()
    hdr = _header(0, trailer, 1, 0, name)
    out.write(hdr + name + b"\0" + _pad(len(hdr) + len(name) + 1))
