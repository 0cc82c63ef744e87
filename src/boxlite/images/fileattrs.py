"""What a file from an image keeps on the host: its owner ids (if a box can map them) and plain
user xattrs only. Shared by layer unpacking and rootfs directory imports."""

from __future__ import annotations


def keep_xattr(name: str) -> bool:
    """Only plain user xattrs survive: no file capabilities, security labels, ACLs or overlay
    metadata (``trusted.overlay.*``, ``user.overlay.*``) from an image."""
    return name.startswith("user.") and not name.startswith("user.overlay.")


ID_COUNT = 65536
OVERFLOW_ID = 65534


def host_id(value: int) -> int:
    """The uid/gid a layer file gets on the host: the image's, unless no box could map it
    (boxes map ids 0-65535): then ``65534`` (nobody)."""
    return value if 0 <= value < ID_COUNT else OVERFLOW_ID
