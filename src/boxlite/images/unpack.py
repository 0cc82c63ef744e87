"""Safe, streaming layer extraction into an overlayfs-ready directory.

Every path is resolved component by component from the layer root with ``O_NOFOLLOW`` and
``dir_fd`` (openat-style), so symlinks inside the layer are never followed while writing:

* ``..`` components and absolute member names raise :class:`UnsafeLayerError`;
* a parent that is a symlink (``link -> /etc`` then ``link/passwd``, or a directory replaced by
  a symlink mid-layer) raises :class:`UnsafeLayerError`;
* hard links must name a member already extracted inside the layer (resolved the same way) and
  never follow a final symlink;
* final components are created with ``O_CREAT|O_EXCL|O_NOFOLLOW`` after removing what was there.

Whiteouts become overlayfs whiteouts: ``.wh.NAME`` → character device 0:0 ``NAME``;
``.wh..wh..opq`` → xattr ``trusted.overlay.opaque=y`` on the directory. Ownership is shifted:
``uid → uid_base + uid`` (ids ≥ 65536 → ``uid_base + 65534``). Device nodes are recreated
(requires root; skipped otherwise). ``trusted.overlay.*`` xattrs carried by a layer are
dropped; other xattrs are applied to files and directories when the filesystem allows.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol

import zstandard

from ..errors import DigestMismatchError, ImageError, UnsafeLayerError

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def shift_id(value: int, base: int) -> int:
    """Map a box uid/gid to the host id: ``base + id``; ids ≥ 65536 become ``base + 65534``."""
    return base + value if 0 <= value < 65536 else base + 65534


class Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class _HashingReader:
    """File-like wrapper hashing everything read through it."""

    def __init__(self, raw: Reader) -> None:
        self.raw = raw
        self.hasher = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.hasher.update(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def open_decompressed(f: IO[bytes]) -> Reader:
    """Return a reader of the uncompressed tar stream (gzip, zstd or plain by magic)."""
    head = f.read(4)
    f.seek(0)
    if head.startswith(_GZIP_MAGIC):
        return gzip.GzipFile(fileobj=f, mode="rb")
    if head == _ZSTD_MAGIC:
        return zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)
    return f


def unpack_layer(blob: Path, dest: Path, uid_base: int,
                 diff_id: str | None = None) -> None:
    """Extract the layer blob into the existing empty directory ``dest``.

    ``diff_id`` (sha256 of the uncompressed tar) is verified when given. On error ``dest`` is
    left partially filled; the caller discards it.
    """
    with open(blob, "rb") as raw:
        reader = _HashingReader(open_decompressed(raw))
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tf:  # type: ignore[call-overload]
                ex = Extractor(dest, uid_base)
                try:
                    for member in tf:
                        ex.add(member, tf.extractfile if member.isreg() else None)
                    ex.finish()
                finally:
                    ex.close()
            reader.drain()
        except (tarfile.TarError, EOFError, OSError, zlib.error, zstandard.ZstdError) as e:
            if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise ImageError(f"cannot unpack layer {blob.name}: {e}") from e
    if diff_id and "sha256:" + reader.hasher.hexdigest() != diff_id:
        raise DigestMismatchError(f"layer {blob.name}: uncompressed digest does not match "
                                  f"diff_id {diff_id}")


class Extractor:
    """Writes tar members under one root directory without ever following a symlink."""

    def __init__(self, root: Path, uid_base: int) -> None:
        self.root_fd = os.open(root, _DIR_FLAGS)
        self.base = uid_base
        self.privileged = os.geteuid() == 0
        self._fds: dict[tuple[str, ...], int] = {}
        self._dir_times: list[tuple[tuple[str, ...], int]] = []
        if self.privileged:
            os.fchown(self.root_fd, uid_base, uid_base)
        os.fchmod(self.root_fd, 0o755)

    def close(self) -> None:
        self._drop_cache()
        os.close(self.root_fd)

    def _drop_cache(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    # -- path resolution --------------------------------------------------------------
    @staticmethod
    def split(name: str) -> tuple[str, ...]:
        """Member name → path components; reject absolute names and ``..``."""
        if name.startswith("/"):
            raise UnsafeLayerError(f"absolute path in layer: {name!r}")
        parts = tuple(p for p in name.split("/") if p not in ("", "."))
        if ".." in parts:
            raise UnsafeLayerError(f"path escapes the layer: {name!r}")
        if any("\0" in p for p in parts):
            raise UnsafeLayerError(f"NUL byte in layer path {name!r}")
        return parts

    def dir_fd(self, parts: tuple[str, ...], create: bool = True) -> int:
        """fd of directory ``parts`` (cached; do not close), creating missing dirs."""
        if not parts:
            return self.root_fd
        fd = self._fds.get(parts)
        if fd is not None:
            return fd
        parent = self.dir_fd(parts[:-1], create)
        name = parts[-1]
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
            os.mkdir(name, 0o755, dir_fd=parent)
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            if self.privileged:
                os.fchown(fd, self.base, self.base)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafeLayerError(
                    f"layer path goes through a symlink or non-directory: {'/'.join(parts)}"
                ) from None
            raise
        self._fds[parts] = fd
        return fd

    def _clear(self, pfd: int, parts: tuple[str, ...], keep_dir: bool = False) -> bool:
        """Remove ``parts`` (in its parent ``pfd``) unless it is a dir and ``keep_dir``.

        Returns True if an existing directory was kept.
        """
        name = parts[-1]
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            for key in [k for k in self._fds if k[: len(parts)] == parts]:
                self._drop_one(key)
            shutil.rmtree(name, dir_fd=pfd)
        else:
            os.unlink(name, dir_fd=pfd)
        return False

    # -- members ----------------------------------------------------------------------
    def add(self, m: tarfile.TarInfo,
            extract: Callable[[tarfile.TarInfo], IO[bytes] | None] | None) -> None:
        parts = self.split(m.name)
        if len(self._fds) > 256:
            self._drop_cache()
        if not parts:
            if m.isdir():
                self._meta_fd(self.root_fd, m)
            return
        name = parts[-1]
        if name.startswith(WHITEOUT):
            self._whiteout(parts)
            return
        pfd = self.dir_fd(parts[:-1])
        if m.isdir():
            opaque = False
            try:
                os.mkdir(name, 0o700, dir_fd=pfd)
            except FileExistsError:
                # a directory re-created over this layer's own whiteout must hide the lower one
                opaque = self._is_whiteout(pfd, name)
                if not self._clear(pfd, parts, keep_dir=True):
                    os.mkdir(name, 0o700, dir_fd=pfd)
                self._drop_one(parts)
            fd = self.dir_fd(parts, create=False)
            self._meta_fd(fd, m)
            if opaque:
                os.setxattr(fd, "trusted.overlay.opaque", b"y")
            self._dir_times.append((parts, int(m.mtime)))
        elif m.isreg():
            try:
                fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=pfd)
            except FileExistsError:  # replace what an earlier member put there (never follow)
                self._clear(pfd, parts)
                fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=pfd)
            try:
                src = extract(m) if extract else None
                if src is not None:
                    _copy(src, fd)
                self._meta_fd(fd, m)
                os.utime(fd, ns=(int(m.mtime) * 10**9,) * 2)
            finally:
                os.close(fd)
        elif m.issym():
            try:
                os.symlink(m.linkname, name, dir_fd=pfd)
            except FileExistsError:
                self._clear(pfd, parts)
                os.symlink(m.linkname, name, dir_fd=pfd)
            if self.privileged:
                os.chown(name, shift_id(m.uid, self.base), shift_id(m.gid, self.base),
                         dir_fd=pfd, follow_symlinks=False)
            os.utime(name, ns=(int(m.mtime) * 10**9,) * 2, dir_fd=pfd, follow_symlinks=False)
        elif m.islnk():
            self._hardlink(parts, m.linkname)
        elif m.ischr() or m.isblk() or m.isfifo():
            self._special(pfd, parts, m)
        # other member types (e.g. GNU volume headers) carry no file: ignored

    def _drop_one(self, parts: tuple[str, ...]) -> None:
        fd = self._fds.pop(parts, None)
        if fd is not None:
            os.close(fd)

    def _whiteout(self, parts: tuple[str, ...]) -> None:
        name = parts[-1]
        pfd = self.dir_fd(parts[:-1])
        if name == OPAQUE:
            self._require_root("opaque whiteout")
            os.setxattr(pfd, "trusted.overlay.opaque", b"y")
            return
        if name.startswith(WHITEOUT + WHITEOUT):  # other aufs metadata (.wh..wh.plnk...)
            return
        target = name[len(WHITEOUT):]
        if not target or target in (".", ".."):
            raise UnsafeLayerError(f"invalid whiteout {'/'.join(parts)!r}")
        self._require_root("whiteout")
        self._clear(pfd, (*parts[:-1], target))
        os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)
        os.chown(target, self.base, self.base, dir_fd=pfd, follow_symlinks=False)

    @staticmethod
    def _is_whiteout(pfd: int, name: str) -> bool:
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0

    def _hardlink(self, parts: tuple[str, ...], linkname: str) -> None:
        target = self.split(linkname)
        if not target:
            raise UnsafeLayerError(f"hard link {'/'.join(parts)!r} to the layer root")
        try:
            sfd = self.dir_fd(target[:-1], create=False)
            st = os.stat(target[-1], dir_fd=sfd, follow_symlinks=False)
        except FileNotFoundError:
            raise ImageError(f"hard link {'/'.join(parts)!r} to missing {linkname!r}") from None
        if stat.S_ISDIR(st.st_mode):
            raise UnsafeLayerError(f"hard link {'/'.join(parts)!r} to a directory")
        if target == parts:
            return
        pfd = self.dir_fd(parts[:-1])
        self._clear(pfd, parts)
        os.link(target[-1], parts[-1], src_dir_fd=sfd, dst_dir_fd=pfd, follow_symlinks=False)

    def _special(self, pfd: int, parts: tuple[str, ...], m: tarfile.TarInfo) -> None:
        self._clear(pfd, parts)
        name = parts[-1]
        if m.isfifo():
            os.mkfifo(name, 0o600, dir_fd=pfd)
        else:
            if not self.privileged:
                return  # device nodes need root; skipped when unprivileged
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            os.mknod(name, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=pfd)
        if self.privileged:
            os.chown(name, shift_id(m.uid, self.base), shift_id(m.gid, self.base),
                     dir_fd=pfd, follow_symlinks=False)
        # the name was just created by us in a private work dir: not a symlink
        os.chmod(name, m.mode & 0o7777, dir_fd=pfd)

    def _meta_fd(self, fd: int, m: tarfile.TarInfo) -> None:
        if self.privileged:
            os.fchown(fd, shift_id(m.uid, self.base), shift_id(m.gid, self.base))
        os.fchmod(fd, m.mode & 0o7777)
        for key, value in m.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            xname = key[len("SCHILY.xattr."):]
            if xname.startswith("trusted.overlay."):
                continue
            try:
                os.setxattr(fd, xname, value.encode("utf-8", "surrogateescape"))
            except OSError:
                pass  # filesystem without xattr support for that namespace

    def _require_root(self, what: str) -> None:
        if not self.privileged:
            raise ImageError(f"creating an overlayfs {what} requires root")

    def finish(self) -> None:
        """Apply directory mtimes (children changed them while extracting)."""
        for parts, mtime in self._dir_times:
            try:
                fd = self.dir_fd(parts, create=False)
                os.utime(fd, ns=(mtime * 10**9,) * 2)
            except (OSError, UnsafeLayerError):
                continue


def _copy(src: IO[bytes], fd: int) -> None:
    while chunk := src.read(1 << 20):
        view = memoryview(chunk)
        while view:
            n = os.write(fd, view)
            view = view[n:]
