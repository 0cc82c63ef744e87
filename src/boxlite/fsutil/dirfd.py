"""Walk and create directories below a root fd without ever following a symlink.

Every component is opened with ``O_NOFOLLOW|O_DIRECTORY`` relative to its parent's fd, so a
symlink (or a non-directory) anywhere on the way is an error, not a detour: no path string is
ever resolved by the kernel through a link that somebody else placed, and no ``realpath`` check
can be fooled by links that only resolve past PATH_MAX.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from ..errors import UnsafeArchiveError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NAME_MAX = 255  # bytes of one path component (Linux)
KEEP_FDS = 32  # the first directory fds kept open along the current path, then every 32nd one


def split_path(name: str, max_bytes: int, max_depth: int) -> tuple[str, ...]:
    """A relative member name -> its components; reject absolute names, ``..``, NUL and
    names longer or deeper than the limits (a typed error, never RecursionError/OSError)."""
    raw = os.fsencode(name)
    if len(raw) > max_bytes:
        raise UnsafeArchiveError(f"path longer than {max_bytes} bytes: {name[:80]!r}...")
    if name.startswith("/"):
        raise UnsafeArchiveError(f"absolute path: {name!r}")
    if "\0" in name:
        raise UnsafeArchiveError(f"NUL byte in path {name!r}")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise UnsafeArchiveError(f"path with '..': {name!r}")
    if len(parts) > max_depth:
        raise UnsafeArchiveError(f"path deeper than {max_depth} levels: {name[:80]!r}...")
    if any(len(os.fsencode(p)) > NAME_MAX for p in parts):
        raise UnsafeArchiveError(f"path component longer than {NAME_MAX} bytes in {name[:80]!r}...")
    return parts


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """``lstat`` of ``name`` in ``dir_fd``; None when it does not exist."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def is_dir(st: os.stat_result | None) -> bool:
    return st is not None and stat.S_ISDIR(st.st_mode)


class DirWalker:
    """Directories below one root fd, opened component by component (``O_NOFOLLOW``).

    Only the fds along the most recently used path are cached (a tar lists a directory's
    members together): the first ``KEEP_FDS`` of them, then one every ``KEEP_FDS`` levels, and
    the deepest one, so any depth works without running out of fds (65 at 1,024 levels) or
    recursing, and going back up a deep path reopens at most ``KEEP_FDS`` levels (walking a
    1,000-level chain deepest first reopened every level above the 32nd for each step: a box's
    deep tree made copy_out quadratic). The root fd is borrowed, not closed.
    """

    def __init__(self, root_fd: int, dir_mode: int = 0o755) -> None:
        self.root_fd = root_fd
        self.dir_mode = dir_mode
        self._chain: list[tuple[str, int | None]] = []  # (component, fd or None if not kept)

    def close(self) -> None:
        self._truncate(0)

    def _truncate(self, n: int) -> None:
        for _, fd in self._chain[n:]:
            if fd is not None:
                os.close(fd)
        del self._chain[n:]

    def open_dir(self, parts: tuple[str, ...], create: bool = True) -> int:
        """fd of directory ``parts`` (owned by the walker: valid until the next call), creating
        missing directories when ``create``. A symlink or non-directory on the way raises
        UnsafeArchiveError; a missing one without ``create`` raises FileNotFoundError."""
        common = 0
        for (have, _), want in zip(self._chain, parts, strict=False):
            if have != want:
                break
            common += 1
        self._truncate(common)
        while self._chain and self._chain[-1][1] is None:  # reopen from the deepest kept fd
            self._truncate(len(self._chain) - 1)
        for i in range(len(self._chain), len(parts)):
            parent = self._chain[-1][1] if self._chain else self.root_fd
            assert parent is not None
            fd = self._open_one(parent, parts[i], parts[: i + 1], create)
            depth = len(self._chain)  # of the previous deepest fd (1-based)
            if depth > KEEP_FDS and depth % KEEP_FDS:  # not a kept level: no longer needed
                last, last_fd = self._chain[-1]
                if last_fd is not None:
                    os.close(last_fd)
                self._chain[-1] = (last, None)
            self._chain.append((parts[i], fd))
        if not parts:
            return self.root_fd
        deepest = self._chain[-1][1]
        assert deepest is not None
        return deepest

    def _open_one(self, parent: int, name: str, where: tuple[str, ...], create: bool) -> int:
        for _ in range(2):
            try:
                return os.open(name, DIR_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(name, self.dir_mode, dir_fd=parent)
                except FileExistsError:
                    pass  # created meanwhile: open it (still without following)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafeArchiveError(
                        f"path goes through a symlink or a non-directory: {'/'.join(where)!r}"
                    ) from None
                raise
        return os.open(name, DIR_FLAGS, dir_fd=parent)

    def forget(self, parts: tuple[str, ...]) -> None:
        """``parts`` was removed or replaced: drop cached fds of it and below."""
        if len(self._chain) >= len(parts) and tuple(n for n, _ in self._chain[: len(parts)]) == parts:
            self._truncate(len(parts) - 1 if parts else 0)


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Delete ``path`` and everything below it, best effort (errors are skipped, like
    ``shutil.rmtree(ignore_errors=True)``), at any depth: ``shutil.rmtree`` recurses, so a
    box's 3000-level tree made it raise RecursionError. One directory fd is held at a time
    (going up through ``..``); symlinks are removed, never followed; other file systems
    mounted below ``path`` are left alone."""
    try:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(path)
            return
        fd = os.open(path, DIR_FLAGS)
    except OSError:
        return
    device = st.st_dev
    names: list[str] = []  # the path from ``path`` down to fd
    stuck: set[tuple[int, int]] = set()  # (dev, ino) that could not be removed
    while True:
        child = None
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    try:
                        est = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if (est.st_dev, est.st_ino) in stuck:
                        continue
                    if not stat.S_ISDIR(est.st_mode):
                        try:
                            os.unlink(entry.name, dir_fd=fd)
                        except OSError:
                            stuck.add((est.st_dev, est.st_ino))
                    elif est.st_dev != device:
                        stuck.add((est.st_dev, est.st_ino))  # a mount point: not ours to empty
                    else:
                        child = entry.name
                        break
        except OSError:
            pass
        if child is not None:
            try:
                nfd = os.open(child, DIR_FLAGS, dir_fd=fd)
            except OSError:
                stuck.add((est.st_dev, est.st_ino))
                continue
            os.close(fd)
            fd = nfd
            names.append(child)
            continue
        if not names:  # back at the top
            os.close(fd)
            with contextlib.suppress(OSError):
                os.rmdir(path)
            return
        here = os.fstat(fd)
        try:
            parent = os.open("..", DIR_FLAGS, dir_fd=fd)
        except OSError:
            os.close(fd)
            return
        os.close(fd)
        fd = parent
        try:
            os.rmdir(names.pop(), dir_fd=fd)
        except OSError:
            stuck.add((here.st_dev, here.st_ino))
