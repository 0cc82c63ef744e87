"""copy_out on the host: write a tar that came from a box under a destination, trusting nothing
in it (the box, its files and its guest agent may all be hostile).

* Names are split and checked (no absolute names, no ``..``, length/depth caps); every entry
  must lie under the copied top-level name, and every directory on the way is opened with
  ``O_NOFOLLOW`` from its parent's fd (:mod:`.dirfd`): a symlink the box planted, now or in an
  earlier copy, is never followed while writing.
* Files are created with ``O_EXCL|O_NOFOLLOW`` after removing what was there (never written
  through an existing file or link); a non-empty directory is never replaced.
* Symlinks are created with the box's target as is (they are data) and never followed.
* Hard links may only name a regular file this same copy wrote.
* Device nodes and FIFOs are skipped; ownership is never applied (files belong to the caller);
  setuid/setgid/sticky bits are dropped.
* Zero blocks become holes: a sparse file stays sparse, and so does a box's dense stream of
  zeros, so the host never allocates more than the box sent.
* Limits: bytes received, entries, a deadline, path length and depth.
* Staged: the archive is extracted into a fresh directory beside the destination and moved into
  place only once complete (:mod:`.commit`); a failed copy changes nothing at the destination.
  The staging directory's name holds its maker's pid and start time: a copy killed mid-way
  (kill -9) leaves one, and the next copy into the same directory removes it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import BoxliteError, ConfigError, ResourceExhaustedError, TimeoutError, UnsafeArchiveError
from ..procfs import process_start_time
from . import commit
from .copylimits import DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES
from .dirfd import DIR_FLAGS, DirWalker, is_dir, lstat_at, remove_tree, split_path
from .tarread import CHUNK, Entry, TarReader

MAX_PATH_BYTES = 4096  # one member name (PATH_MAX)
MAX_DEPTH = 1024  # levels below the copied path (the agent refuses deeper trees too)
MAX_LINK_BYTES = 4095  # symlink target
HOLE_BLOCK = 64 << 10  # all-zero blocks of this size are left as holes
FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_ZEROS = bytes(HOLE_BLOCK)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_entries: int = DEFAULT_MAX_ENTRIES
    deadline: float | None = None  # time.monotonic() value
    max_path_bytes: int = MAX_PATH_BYTES
    max_depth: int = MAX_DEPTH

    def check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TimeoutError("copy_out did not finish before its deadline (CopyOptions.timeout)")


class _Meter:
    """The stream as the reader sees it: counted against ``max_bytes``, deadline checked."""

    def __init__(self, read: Callable[[int], bytes], limits: Limits) -> None:
        self._read = read
        self.limits = limits
        self.total = 0

    def read(self, n: int) -> bytes:
        self.limits.check_deadline()
        data = self._read(n)
        self.total += len(data)
        if self.total > self.limits.max_bytes:
            raise ResourceExhaustedError(
                f"copy_out: the box sent more than {self.limits.max_bytes} bytes (CopyOptions.max_bytes)"
            )
        return data

    def drain(self) -> None:
        """Read to the end, so the sender's own status (its exit code) is seen."""
        while self.read(CHUNK):
            pass


def extract_archive(
    read: Callable[[int], bytes], dest: str, top: str, *, include_parent: bool = True, overwrite: bool = True,
    limits: Limits = Limits(),
) -> None:  # fmt: skip
    """Extract the tar read through ``read`` whose single top-level member is ``top``.

    ``dest`` an existing directory and ``include_parent``: the copy lands at ``dest/top``;
    otherwise ``top`` itself becomes ``dest`` (docker cp). Nothing on the host is touched
    before the first entry arrives, and nothing at the destination before the last one has
    been written and checked (a failing copy leaves the destination as it was).
    """
    if not top or top in (".", "..") or "/" in top or "\0" in top:
        raise ConfigError(f"invalid name for the copied path: {top!r}")
    meter = _Meter(read, limits)
    reader = TarReader(meter.read)
    entry = reader.next()
    if entry is None:
        meter.drain()
        raise UnsafeArchiveError("the box sent an empty archive")
    try:
        job = _Extraction(dest, top, include_parent, overwrite, limits)
        try:
            while entry is not None:
                job.add(entry, reader)
                entry = reader.next()
            job.finish()
        finally:
            job.close()
    except BoxliteError:
        raise  # (our TimeoutError is an OSError too)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise ResourceExhaustedError(f"copy_out to {dest}: {e.strerror}") from e
        raise BoxliteError(f"copy_out to {dest}: {e}") from e
    meter.drain()


STAGE_PREFIX = ".boxlite-copy-"


def _stage_name() -> str:
    """``.boxlite-copy-<pid>-<start time>-<random>``: the owner is in the name."""
    pid = os.getpid()
    return f"{STAGE_PREFIX}{pid}-{process_start_time(pid) or 0}-{secrets.token_hex(6)}"


def _stage_owner(name: str) -> tuple[int, int] | None:
    """(pid, start time) of a staging directory's maker; None for any other name."""
    if not name.startswith(STAGE_PREFIX):
        return None
    parts = name[len(STAGE_PREFIX) :].split("-")
    if len(parts) != 3 or not (parts[0].isdigit() and parts[1].isdigit()) or len(parts[2]) != 12:
        return None
    return int(parts[0]), int(parts[1])


def sweep_stale_stages(base: str, base_fd: int) -> int:
    """Remove the staging directories that dead copies (killed mid-way) left in ``base``: only
    directories of this user, named as :func:`_stage_name` names them, whose maker is gone (a
    live copy's are kept). Returns how many were removed."""
    removed = 0
    with os.scandir(base_fd) as entries:
        stale = []
        for entry in entries:
            owner = _stage_owner(entry.name)
            if owner is None or process_start_time(owner[0]) == owner[1]:
                continue
            with contextlib.suppress(OSError):
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid():
                    stale.append(entry.name)
    for name in stale:
        remove_tree(os.path.join(base, name))
        removed += 1
    return removed


class _Extraction:
    def __init__(self, dest: str, top: str, include_parent: bool, overwrite: bool, limits: Limits) -> None:
        path = os.path.abspath(dest)
        if include_parent and os.path.isdir(path):
            base, self.target = path, top
        else:
            base, self.target = os.path.dirname(path), os.path.basename(path)
        if not self.target:
            raise ConfigError(f"cannot copy onto {dest!r}")
        self.top = top
        self.overwrite = overwrite
        self.limits = limits
        os.makedirs(base, exist_ok=True)  # the caller's own path: links in it are the caller's choice
        self.base = base
        self.base_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.stage = _stage_name()  # beside the target: renames stay on one fs
        try:
            with contextlib.suppress(OSError):  # best effort: never a reason for this copy to fail
                if sweep_stale_stages(base, self.base_fd):
                    log.info("copy_out: removed what killed copies left in %s", base)
            os.mkdir(self.stage, 0o700, dir_fd=self.base_fd)
            self.stage_fd = os.open(self.stage, DIR_FLAGS, dir_fd=self.base_fd)
        except BaseException:
            os.close(self.base_fd)
            raise
        self.walker = DirWalker(self.stage_fd)  # entries are written below the staging directory
        self.files: set[tuple[int, int]] = set()  # (dev, ino) of regular files this copy wrote
        self.dirs: list[tuple[tuple[str, ...], int, int]] = []  # created dirs: (parts, mode, mtime ns)
        self.entries = 0

    def close(self) -> None:
        """Drop the staging directory (what a failed copy wrote, what a kept entry skipped)."""
        self.walker.close()
        os.close(self.stage_fd)
        remove_tree(os.path.join(self.base, self.stage))
        os.close(self.base_fd)

    def _map(self, name: str) -> tuple[str, ...]:
        parts = split_path(name, self.limits.max_path_bytes, self.limits.max_depth + 1)  # + the top
        if not parts or parts[0] != self.top:
            raise UnsafeArchiveError(f"archive entry {name!r} is outside the copied path {self.top!r}")
        return (self.target, *parts[1:])

    def add(self, entry: Entry, reader: TarReader) -> None:
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise ResourceExhaustedError(
                f"copy_out: more than {self.limits.max_entries} entries (CopyOptions.max_entries)"
            )
        self.limits.check_deadline()
        parts = self._map(entry.name)
        if entry.kind == "special":
            log.info("copy_out: skipped device node or FIFO %r", entry.name)
        elif entry.kind == "dir":
            self._dir(parts, entry)
        elif entry.kind == "file":
            self._file(parts, entry, reader)
        elif entry.kind == "symlink":
            self._symlink(parts, entry)
        else:
            self._hardlink(parts, entry)

    # -- replacing what is there -----------------------------------------------------------
    def _make_room(self, pfd: int, parts: tuple[str, ...], kind: str) -> bool:
        """``parts`` exists: remove it if overwriting (False: keep it, skip the entry). A
        directory is only removed when empty: a box never deletes a host tree."""
        if not self.overwrite:
            return False
        name = parts[-1]
        st = lstat_at(pfd, name)
        if st is None:
            return True
        if stat.S_ISDIR(st.st_mode):
            try:
                os.rmdir(name, dir_fd=pfd)
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise UnsafeArchiveError(
                        f"copy_out would replace the non-empty directory {'/'.join(parts)!r} with a {kind}"
                    ) from None
                raise
        else:
            os.unlink(name, dir_fd=pfd)
        self.walker.forget(parts)
        return True

    # -- entry kinds -----------------------------------------------------------------------
    def _dir(self, parts: tuple[str, ...], entry: Entry) -> None:
        pfd = self.walker.open_dir(parts[:-1])
        st = lstat_at(pfd, parts[-1])
        if is_dir(st):
            return  # an existing directory keeps its owner, mode and times
        if st is not None and not self._make_room(pfd, parts, "directory"):
            return
        os.mkdir(parts[-1], 0o700, dir_fd=pfd)
        self.dirs.append((parts, entry.mode & 0o777, _ns(entry.mtime)))

    def _file(self, parts: tuple[str, ...], entry: Entry, reader: TarReader) -> None:
        pfd = self.walker.open_dir(parts[:-1])
        try:
            fd = os.open(parts[-1], FILE_FLAGS, 0o600, dir_fd=pfd)
        except FileExistsError:
            if not self._make_room(pfd, parts, "file"):
                return  # its data is skipped by the reader
            fd = os.open(parts[-1], FILE_FLAGS, 0o600, dir_fd=pfd)
        try:
            for offset, chunk in reader.data():
                _write_sparse(fd, offset, chunk)
            os.ftruncate(fd, entry.realsize)
            os.fchmod(fd, entry.mode & 0o777)
            os.utime(fd, ns=(_ns(entry.mtime),) * 2)
            st = os.fstat(fd)
            self.files.add((st.st_dev, st.st_ino))
        finally:
            os.close(fd)

    def _symlink(self, parts: tuple[str, ...], entry: Entry) -> None:
        target = entry.linkname
        if not target or "\0" in target or len(os.fsencode(target)) > MAX_LINK_BYTES:
            raise UnsafeArchiveError(f"invalid symlink target for {entry.name!r}")
        pfd = self.walker.open_dir(parts[:-1])
        try:
            os.symlink(target, parts[-1], dir_fd=pfd)
        except FileExistsError:
            if not self._make_room(pfd, parts, "symlink"):
                return
            os.symlink(target, parts[-1], dir_fd=pfd)
        os.utime(parts[-1], ns=(_ns(entry.mtime),) * 2, dir_fd=pfd, follow_symlinks=False)

    def _hardlink(self, parts: tuple[str, ...], entry: Entry) -> None:
        source = self._map(entry.linkname)
        if source == parts:
            return
        refused = UnsafeArchiveError(
            f"hard link {entry.name!r} -> {entry.linkname!r}: only files of this same copy may be linked"
        )
        try:
            sfd = os.dup(self.walker.open_dir(source[:-1], create=False))
        except FileNotFoundError:
            raise refused from None
        try:
            st = lstat_at(sfd, source[-1])
            if st is None or not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) not in self.files:
                raise refused
            pfd = self.walker.open_dir(parts[:-1])
            try:
                os.link(source[-1], parts[-1], src_dir_fd=sfd, dst_dir_fd=pfd, follow_symlinks=False)
            except FileExistsError:
                if not self._make_room(pfd, parts, "hard link"):
                    return
                os.link(source[-1], parts[-1], src_dir_fd=sfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(sfd)

    def finish(self) -> None:
        """Move the complete extraction into place, then set the modes and times of the
        directories it created there, deepest first (their writes are over)."""
        self.limits.check_deadline()
        dest = DirWalker(self.base_fd)
        try:
            steps = commit.plan(self.walker, dest, (self.target,), self.overwrite)
            self.limits.check_deadline()  # the last point where the destination is untouched
            moved = commit.apply(steps, self.walker, dest)
            for parts, mode, mtime in reversed(self.dirs):  # (no deadline now: the copy is in place)
                if parts not in moved:
                    continue  # merged into a directory that was there, or kept out
                try:
                    fd = dest.open_dir(parts, create=False)
                except (FileNotFoundError, UnsafeArchiveError):
                    continue  # replaced by a later entry
                os.fchmod(fd, mode)
                os.utime(fd, ns=(mtime, mtime))
        finally:
            dest.close()


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _write_sparse(fd: int, offset: int, chunk: bytes) -> None:
    """Write ``chunk`` at ``offset``, leaving all-zero blocks as holes."""
    for start in range(0, len(chunk), HOLE_BLOCK):
        piece = chunk[start : start + HOLE_BLOCK]
        if piece == _ZEROS[: len(piece)]:
            continue
        view = memoryview(piece)
        pos = offset + start
        while view:
            n = os.pwrite(fd, view, pos)
            view = view[n:]
            pos += n
