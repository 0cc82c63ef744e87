"""Named volumes: directories kept in the home (``<home>/volumes/<id>/data``) that outlive the
boxes mounting them. A box mounts one by id through ``BoxOptions.volumes`` (``"vol-…:/data"``);
the engines then bind (namespace) or virtiofs-share (VM) its data directory like any host path.

Ids are server-assigned (``vol-`` + 16 hex digits) and checked against that exact form before
they become a path, so an id can never name a path outside ``<home>/volumes``. A box writes
whatever it likes into its volume (symlinks too): every walk of a data directory (its size, its
removal) goes through directory fds opened with ``O_NOFOLLOW`` and never follows a link.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import secrets
import stat
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from ..errors import ConfigError, NotFoundError, ResourceExhaustedError, StorageError
from ..fsutil.dirfd import DIR_FLAGS, remove_tree
from .config import VOLUME_ID as _ID
from .config import VOLUME_PREFIX, BoxConfig

MAX_VOLUMES = 1024
"""Named volumes per home (ResourceExhaustedError beyond)."""
SIZE_MAX_ENTRIES = 100_000
SIZE_DEADLINE = 2.0
SIZE_MAX_DEPTH = 256
"""``size_bytes`` walks at most this many entries, this many seconds, this deep; else it is None."""
_META = "meta.json"
_DATA = "data"


@dataclass(frozen=True)
class VolumeInfo:
    """A named volume: its id, creation time (RFC 3339) and allocated bytes (None: not measured)."""

    id: str
    created_at: str
    size_bytes: int | None = None


def is_volume_id(text: object) -> bool:
    """Is ``text`` exactly a volume id (what ``BoxOptions.volumes`` takes in place of a host path)?"""
    return isinstance(text, str) and _ID.fullmatch(text) is not None


def check_id(volume_id: object) -> str:
    """``volume_id`` if it has the exact id form; ConfigError otherwise (it never becomes a path)."""
    if not is_volume_id(volume_id):
        raise ConfigError(f"invalid volume id {volume_id!r}: expected {VOLUME_PREFIX} and 16 hex digits")
    return str(volume_id)


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


class VolumeStore:
    """The named volumes of one home (``<home>/volumes``); create/remove hold a file lock."""

    def __init__(self, home_root: Path) -> None:
        self.root = home_root / "volumes"

    def data_dir(self, volume_id: str) -> Path:
        return self.root / check_id(volume_id) / _DATA

    def _open(self) -> int:
        """The volumes directory (created 0700 if missing), opened without following."""
        try:
            self.root.mkdir(mode=0o700, exist_ok=True)
            return os.open(self.root, DIR_FLAGS)
        except OSError as e:
            raise StorageError(f"cannot open the volumes directory {self.root}: {e.strerror}") from e

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)

    @contextlib.asynccontextmanager
    async def _held(self, how: int) -> AsyncIterator[int]:
        """``flock(how)`` without blocking the loop or a worker thread while another process
        holds it (waiting threads could use up the pool a removal needs): retried every few ms."""
        fd = self._open()
        try:
            delay = 0.002
            while True:
                try:
                    fcntl.flock(fd, how | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.05)
            yield fd
        finally:
            os.close(fd)

    @contextlib.asynccontextmanager
    async def using(self, config: BoxConfig) -> AsyncIterator[None]:
        """A shared hold on the volumes for as long as a box naming some is being created or
        started (every process of the home): a removal (exclusive) waits, then sees the box.
        Nothing for a box without named volumes."""
        if not any(v.volume_id for v in config.volumes):
            yield
            return
        async with self._held(fcntl.LOCK_SH):
            yield

    def removing(self) -> contextlib.AbstractAsyncContextManager[int]:
        """The exclusive hold :meth:`remove_locked` needs, for a caller that must check the
        volume's users under it first."""
        return self._held(fcntl.LOCK_EX)

    def _ids(self) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.root) if is_volume_id(n))
        except FileNotFoundError:
            return []

    def create(self) -> VolumeInfo:
        with self._locked() as root:
            if len(self._ids()) >= MAX_VOLUMES:
                raise ResourceExhaustedError(f"this home has {MAX_VOLUMES} volumes, the most allowed; remove some")
            volume_id = VOLUME_PREFIX + secrets.token_hex(8)
            created = time.time()
            os.mkdir(volume_id, 0o700, dir_fd=root)  # a fresh random id: FileExistsError is a bug, let it raise
            vfd = os.open(volume_id, DIR_FLAGS, dir_fd=root)
            try:
                os.mkdir(_DATA, 0o755, dir_fd=vfd)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                mfd = os.open(_META, flags, 0o600, dir_fd=vfd)
                with os.fdopen(mfd, "w") as f:
                    json.dump({"id": volume_id, "created_at": created}, f)
                return VolumeInfo(volume_id, _rfc3339(created), _allocated(vfd))
            finally:
                os.close(vfd)

    def get(self, volume_id: str) -> VolumeInfo:
        """The volume's info; NotFoundError when there is none (ConfigError for a malformed id)."""
        check_id(volume_id)
        try:
            vfd = os.open(self.root / volume_id, DIR_FLAGS)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                raise NotFoundError(f"no volume {volume_id!r}") from None
            raise StorageError(f"cannot open volume {volume_id}: {e.strerror}") from e
        try:
            return VolumeInfo(volume_id, _rfc3339(_created(vfd)), _allocated(vfd))
        finally:
            os.close(vfd)

    def list(self) -> list[VolumeInfo]:
        out = []
        for volume_id in self._ids():
            with contextlib.suppress(NotFoundError):  # removed meanwhile
                out.append(self.get(volume_id))
        return out

    def exists(self, volume_id: str) -> bool:
        check_id(volume_id)
        try:
            return stat.S_ISDIR(os.lstat(self.root / volume_id / _DATA).st_mode) and not os.path.islink(
                self.root / volume_id
            )
        except OSError:
            return False

    def remove_locked(self, root: int, volume_id: str, force: bool = False) -> None:
        """Delete the volume and its data (symlinks in it are removed, never followed), under
        the exclusive hold :meth:`removing` gives (``root``: its fd), taken by the caller so it
        can check the volume's users first. A missing volume is NotFoundError, or success with
        ``force``."""
        check_id(volume_id)
        try:
            st = os.stat(volume_id, dir_fd=root, follow_symlinks=False)
        except FileNotFoundError:
            if force:
                return
            raise NotFoundError(f"no volume {volume_id!r}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise StorageError(f"volume {volume_id} is not a directory")
        remove_tree(self.root / volume_id)  # lstat first, dir fds with O_NOFOLLOW, one level at a time
        if os.path.lexists(self.root / volume_id):
            raise StorageError(f"volume {volume_id} could not be removed completely")

    def resolve(self, config: BoxConfig) -> BoxConfig:
        """``config`` with each named volume's host path set to its data directory; NotFoundError
        for a volume that does not exist (before anything starts)."""
        if not any(v.volume_id for v in config.volumes):
            return config
        mounts = []
        for v in config.volumes:
            if v.volume_id:
                if not self.exists(v.volume_id):
                    raise NotFoundError(f"no volume {v.volume_id!r} (create it with runtime.volumes.create())")
                v = replace(v, host_path=str(self.data_dir(v.volume_id)))
            mounts.append(v)
        return replace(config, volumes=tuple(mounts))


def _created(vfd: int) -> float:
    try:
        mfd = os.open(_META, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=vfd)
        with os.fdopen(mfd, "rb") as f:
            value = json.loads(f.read(4096)).get("created_at")
        if isinstance(value, (int, float)):
            return float(value)
    except (OSError, ValueError, AttributeError):
        pass
    return os.fstat(vfd).st_mtime  # metadata lost: the directory's time is the best guess


def _allocated(vfd: int) -> int | None:
    """Allocated bytes below the volume's data directory (each inode once), walked through
    O_NOFOLLOW directory fds (one component at a time); None past SIZE_MAX_ENTRIES entries,
    SIZE_DEADLINE seconds or SIZE_MAX_DEPTH levels."""
    try:
        top = os.open(_DATA, DIR_FLAGS, dir_fd=vfd)
    except OSError:
        return None
    deadline = time.monotonic() + SIZE_DEADLINE
    seen: set[tuple[int, int]] = set()
    total, entries = os.fstat(top).st_blocks * 512, 0
    pending: list[tuple[str, ...]] = [()]  # directories to list, as names below the data dir
    try:
        while pending:
            parts = pending.pop()
            fd = _open_below(top, parts)
            if fd is None:
                continue
            try:
                with os.scandir(fd) as it:
                    for entry in it:
                        entries += 1
                        if entries > SIZE_MAX_ENTRIES or time.monotonic() > deadline:
                            return None
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue
                        if (st.st_dev, st.st_ino) not in seen:
                            seen.add((st.st_dev, st.st_ino))
                            total += st.st_blocks * 512
                        if stat.S_ISDIR(st.st_mode):
                            if len(parts) >= SIZE_MAX_DEPTH:
                                return None
                            pending.append((*parts, entry.name))
            except OSError:
                pass
            finally:
                os.close(fd)
    finally:
        os.close(top)
    return total


def _open_below(top: int, parts: tuple[str, ...]) -> int | None:
    """A new fd of ``top/parts...``, each component opened with O_NOFOLLOW (None if it is gone
    or was swapped for a link)."""
    fd = os.dup(top)
    for name in parts:
        try:
            nfd = os.open(name, DIR_FLAGS, dir_fd=fd)
        except OSError:
            os.close(fd)
            return None
        os.close(fd)
        fd = nfd
    return fd
