"""Where a volume goes in a box root: created if missing, never through a symlink (stdlib only).

Shared by both engines' box setup (``nsboot`` on the host, ``vminit`` in a VM)."""

from __future__ import annotations

import os
import stat


def volume_target(root: str, guest: str, is_dir: bool, uid_base: int) -> int:
    """O_PATH fd of ``guest`` inside the box root, created if missing. No component may be a
    symlink: the image must not be able to aim a volume at a path outside the box."""
    parts = [p for p in guest.split("/") if p and p != "."]
    if not parts or ".." in parts:
        raise OSError(f"invalid volume path {guest!r}")
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, name in enumerate(parts):
            last = i == len(parts) - 1
            if not last or is_dir:
                try:
                    os.mkdir(name, 0o755, dir_fd=fd)
                    os.chown(name, uid_base, uid_base, dir_fd=fd, follow_symlinks=False)
                except FileExistsError:
                    pass
                flags = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            else:
                try:
                    os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644, dir_fd=fd))
                    os.chown(name, uid_base, uid_base, dir_fd=fd, follow_symlinks=False)
                except FileExistsError:
                    pass
                flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                nxt = os.open(name, flags, dir_fd=fd)
            except OSError as e:
                why = f"{name!r} is a symlink or not a directory ({e.strerror})"
                raise OSError(f"volume path {guest!r}: {why}") from None
            os.close(fd)
            fd = nxt
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                raise OSError(f"volume path {guest!r}: {name!r} is a symlink")
        return fd
    except BaseException:
        os.close(fd)
        raise


DEFAULT_MEMORY_MIB = 512  # what tmpfs sizes assume for a box without a memory limit


def tmpfs_sizes(memory_mib: int | None) -> dict[str, str]:
    """``,size=`` options for a box's /tmp, /dev/shm and /run (both engines). Their pages count
    against the box's memory and cannot be reclaimed (no swap): full, they would leave no
    memory for any process. Sized together below the limit (half, a quarter, a sixteenth),
    filling them fails with ENOSPC instead. Without a limit they are sized as for 512 MiB, not
    tmpfs's default of half the machine's RAM each."""
    m = int(memory_mib) if memory_mib else DEFAULT_MEMORY_MIB
    return {"tmp": f",size={m // 2}m", "shm": f",size={max(1, m // 4)}m", "run": f",size={max(1, m // 16)}m"}
