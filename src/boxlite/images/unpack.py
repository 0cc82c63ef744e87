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
``.wh..wh..opq`` → xattr ``trusted.overlay.opaque=y`` on the directory. Ownership is the
image's (ids ≥ 65536, which no box maps, → 65534): each engine maps it to its boxes itself.

A layer must not plant privileges on the host, where its files live:

* character and block devices are not created (a device node with the image's mode in a host
  directory would be a raw door to that device); both engines give the box its own ``/dev``, and
  the skipped names are logged once per layer;
* only ``user.*`` xattrs are kept (not ``user.overlay.*``): file capabilities
  (``security.capability``), other ``security.*``/``trusted.*`` and ACLs (``system.*``) are
  dropped, so an image cannot ship ``cap_setuid=ep`` binaries;
* setuid/setgid bits are kept (programs in the box need them) and are harmless outside it
  because the store, each layer directory and the box directories are 0700 root-owned: no other
  host user, and no host process running as a box's uid, can reach those files;
* sizes are bounded (:mod:`.limits`): every member is counted from its header (sparse files at
  their logical size) before its data is written, extended headers are read with a cap, and
  runs of zeros are written as holes, so a sparse file stays sparse.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import logging
import os
import shutil
import stat
import tarfile
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Protocol

import zstandard

from ..errors import BoxliteError, DigestMismatchError, ImageError, UnsafeLayerError
from .fileattrs import host_id, keep_xattr
from .limits import ImageBudget, ImageLimits, LayerMeter
from .tarheaders import BoundedTarInfo

_inflate: Any = zlib  # the module whose decompressobj inflates gzip layers
_INFLATE_ERRORS: tuple[type[BaseException], ...] = (zlib.error,)
try:  # ISA-L's inflate, when installed, is ~2x zlib's (same API; it also checks CRC and length)
    from isal import isal_zlib  # type: ignore[import-not-found, unused-ignore]

    _inflate = isal_zlib
    _INFLATE_ERRORS = (zlib.error, isal_zlib.error)  # type: ignore[assignment, unused-ignore]  # stub: an instance
except ImportError:  # pragma: no cover - depends on the environment
    pass
_UNPACK_ERRORS: tuple[type[BaseException], ...] = (
    tarfile.TarError,
    EOFError,
    OSError,
    *_INFLATE_ERRORS,
    zstandard.ZstdError,
    ValueError,
    OverflowError,
    RecursionError,
)  # what a corrupt or hostile layer makes the readers raise: an ImageError for the caller

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_HOLE = 64 << 10  # runs of zeros this long (aligned in the stream) are left as holes
_ZEROS = bytes(_HOLE)
log = logging.getLogger("boxlite.images")


class Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


_CHUNK = 256 << 10  # compressed bytes read per step
_OUT_MAX = 256 << 10  # decompressed bytes per step: a bomb never inflates more than this at once
_PIPE_MAX = 4 << 20  # decompressed bytes buffered between the two threads of one layer
_TAR_BUFSIZE = 64 << 10  # tarfile's stream buffer: larger makes its header reads copy more
_WRITERS = 1  # threads creating new files: more contend in the kernel (same CPU, no faster here)
_WRITE_MAX_FILE = 1 << 20  # larger files are written by the extracting thread itself
_WRITE_JOBS = 64  # files handed over and not yet written...
_WRITE_BYTES = 16 << 20  # ...and their bytes held in memory


class _Prepended:
    """``head`` followed by what ``src`` reads (the magic was read to pick the decompressor)."""

    def __init__(self, head: bytes, src: Reader) -> None:
        self._head = head
        self._src = src

    def read(self, n: int = -1, /) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            return head
        return self._src.read(n)


def _read_head(src: Reader, n: int) -> bytes:
    head = b""
    while len(head) < n and (chunk := src.read(n - len(head))):
        head += chunk
    return head


def decompressed_chunks(src: Reader) -> Iterator[bytes]:
    """The uncompressed tar stream of a layer blob read from ``src`` (gzip, zstd or plain by
    magic), in chunks of at most 256 KiB whatever the compression ratio.

    Gzip goes straight to zlib (no :mod:`gzip` layers; zlib checks each member's CRC and
    length itself), or to ISA-L's zlib-compatible inflate when the ``isal`` package is installed;
    concatenated members are one stream, as for ``gzip -d``; a stream cut short raises EOFError,
    bytes after the last member that do not start another one raise that module's error.
    """
    head = _read_head(src, 4)
    if head.startswith(_GZIP_MAGIC):
        yield from _gunzip(head, src)
    elif head == _ZSTD_MAGIC:
        reader = zstandard.ZstdDecompressor().stream_reader(
            _Prepended(head, src),  # type: ignore[arg-type]  # any object with read() will do
            read_size=_CHUNK,
            read_across_frames=True,
        )
        while chunk := reader.read(_OUT_MAX):
            yield chunk
    else:
        if head:
            yield head
        while chunk := src.read(_CHUNK):
            yield chunk


def _gunzip(data: bytes, src: Reader) -> Iterator[bytes]:
    d = _inflate.decompressobj(wbits=31)
    at_end = False
    while True:
        if not data and not at_end:
            data = src.read(_CHUNK)
            at_end = not data
        out = d.decompress(data, _OUT_MAX)
        data = d.unconsumed_tail
        if out:
            yield out
        if d.eof:  # end of one member: another may follow
            data = d.unused_data
            if not data and not at_end:
                data = src.read(_CHUNK)
                at_end = not data
            if not data:
                return
            d = _inflate.decompressobj(wbits=31)
        elif at_end and not out and not data:
            raise EOFError("compressed layer ended before the end-of-stream marker")


class _Pipe:
    """The decompressed stream, produced by a thread of its own (zlib and sha256 run without
    the GIL, beside the extraction) and read by tarfile. Buffers at most ``_PIPE_MAX`` bytes;
    the producer's error (corrupt data, an aborted download) is raised to the reader."""

    def __init__(self, src: Reader) -> None:
        self.hasher = hashlib.sha256()
        self._src = src
        self._cv = threading.Condition()
        self._chunks: deque[bytes] = deque()
        self._off = 0  # read offset in the first chunk
        self._size = 0
        self._done = False
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._produce, name="boxlite-unpack-inflate", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        error: BaseException | None = None
        try:
            for chunk in decompressed_chunks(self._src):
                self.hasher.update(chunk)
                with self._cv:
                    while self._size >= _PIPE_MAX and not self._closed:
                        self._cv.wait()
                    if self._closed:
                        return
                    self._chunks.append(chunk)
                    self._size += len(chunk)
                    self._cv.notify_all()
        except BaseException as e:  # handed to the reader
            error = e
        with self._cv:
            self._done, self._error = True, error
            self._cv.notify_all()

    def read(self, n: int = -1, /) -> bytes:
        with self._cv:
            while not self._chunks and not self._done:
                self._cv.wait()
            if not self._chunks:
                if self._error is not None:
                    raise self._error
                return b""
            chunk, off = self._chunks[0], self._off
            if n < 0 or off + n >= len(chunk):
                self._chunks.popleft()
                self._off = 0
                out = chunk[off:] if off else chunk
            else:
                self._off = off + n
                out = chunk[off : off + n]
            self._size -= len(out)
            self._cv.notify_all()
            return out

    def close(self) -> None:
        """Stop the producer and wait for it (after it the source may be closed)."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        interrupt = getattr(self._src, "interrupt", None)
        if interrupt is not None:
            interrupt()
        self._thread.join()


def unpack_layer(
    blob: Path,
    dest: Path,
    diff_id: str | None = None,
    limits: ImageLimits | None = None,
    budget: ImageBudget | None = None,
    *,
    source: Reader | None = None,
    compressed_size: int | None = None,
) -> LayerMeter:
    """Extract the layer blob into the existing empty directory ``dest``.

    ``diff_id`` (sha256 of the uncompressed tar) is verified when given. ``limits`` (default:
    the environment's) bound what the layer unpacks to; ``budget`` is shared by the layers of
    one image. Returns the layer's counts. On error ``dest`` is left partially filled; the
    caller discards it.

    ``source`` reads the blob instead of the file ``blob`` (only named in messages then), e.g. a
    download still under way (:class:`~boxlite.images.client.BlobTail`), whose ``compressed_size``
    is given. Such a source must end only once the whole blob is verified: this function returns
    only after reading it to its end.
    """
    limits = limits if limits is not None else ImageLimits.from_env()
    with contextlib.ExitStack() as stack:
        if source is None:
            raw = stack.enter_context(open(blob, "rb"))
            source, compressed_size = raw, os.fstat(raw.fileno()).st_size
        meter = LayerMeter(limits, compressed_size or 0, f"layer sha256:{blob.name[:12]}", budget)
        reader = _Pipe(source)
        stack.callback(reader.close)
        ex: Extractor | None = None
        try:
            with tarfile.open(  # type: ignore[call-overload]
                fileobj=reader, mode="r|", tarinfo=BoundedTarInfo, bufsize=_TAR_BUFSIZE
            ) as tf:
                ex = Extractor(dest, writers=_WRITERS)
                try:
                    while (member := tf.next()) is not None:
                        tf.members.clear()  # a streaming TarFile keeps every member otherwise
                        meter.charge(member.size)
                        ex.add(member, tf.extractfile if member.isreg() else None)
                    ex.finish()
                finally:
                    ex.close()
            while chunk := reader.read():  # trailing bytes count too: they cost CPU to hash
                meter.charge(len(chunk), entries=0)
        except BoxliteError:
            raise
        except _UNPACK_ERRORS as e:
            if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise ImageError(f"cannot unpack layer {blob.name}: {type(e).__name__}: {e}") from e
        finally:
            if ex is not None:
                ex.log_dropped(blob.name)
    if diff_id and "sha256:" + reader.hasher.hexdigest() != diff_id:
        raise DigestMismatchError(f"layer {blob.name}: uncompressed digest does not match diff_id {diff_id}")
    return meter


class _Writers:
    """Threads creating new regular files and symlinks for one :class:`Extractor`.

    Creating an inode costs the kernel far more than parsing its tar header costs Python
    (~0.3 ms per file on ext4 here), so the extractor hands small files (data in memory) and
    symlinks to these threads and goes on. The order of members is kept wherever it shows:

    * a job is created with ``O_EXCL``/``symlink`` only; when something is already at its path
      it goes back, still pending, to the extractor's thread, which replaces what is there (as
      it does for its own members) the next time it waits for the jobs;
    * the extractor waits for every job (:meth:`drain`) before a member that touches a path at,
      above or below a pending one (hard links: their target too), before a whiteout and before
      finishing, so what a member sees is what one thread would have left;
    * each job holds its own duplicate of its parent directory's fd (the extractor's cache may
      close it); a job's error is raised in the extractor's thread.
    """

    def __init__(self, ex: Extractor, threads: int) -> None:
        self._ex = ex
        self._cv = threading.Condition()
        self._jobs: deque[_Job] = deque()
        self._redo: list[_Job] = []  # found something at their path: the extractor replaces it
        self._bytes = 0
        self._busy = 0  # jobs queued, being written, or to redo
        self._files: set[tuple[str, ...]] = set()  # paths of those jobs
        self._below: dict[tuple[str, ...], int] = {}  # each such path and its ancestors -> count
        self._error: BaseException | None = None
        self._stop = False
        self._threads = [
            threading.Thread(target=self._run, name="boxlite-unpack-write", daemon=True) for _ in range(threads)
        ]
        for t in self._threads:
            t.start()

    def busy_with(self, parts: tuple[str, ...], m: tarfile.TarInfo) -> bool:
        """Must the jobs be written before member ``m`` at ``parts``?"""
        if not self._busy:
            return False
        if parts and parts[-1].startswith(WHITEOUT):  # may remove a whole directory
            return True
        if self._conflicts(parts):
            return True
        if m.islnk():
            try:
                return self._conflicts(Extractor.split(m.linkname))
            except UnsafeLayerError:
                return False  # raised by the member itself
        return False

    def _conflicts(self, parts: tuple[str, ...]) -> bool:
        """Is a pending job at ``parts``, above it, or below it?"""
        if parts in self._below:
            return True
        return any(parts[:i] in self._files for i in range(1, len(parts)))

    def submit(self, parts: tuple[str, ...], pfd: int, m: tarfile.TarInfo, data: bytes) -> None:
        """Hand over member ``m`` (a regular file with ``data``, or a symlink) whose parent is ``pfd``
        (a duplicate, now the job's)."""
        with self._cv:
            while True:
                self._raise()
                if self._redo:
                    self._cv.release()
                    try:
                        self._do_redo()
                    finally:
                        self._cv.acquire()
                    continue
                if self._busy < _WRITE_JOBS and self._bytes < _WRITE_BYTES:
                    break
                self._cv.wait()
            self._jobs.append((parts, pfd, m, data))
            self._busy += 1
            self._bytes += len(data)
            self._files.add(parts)
            for i in range(1, len(parts) + 1):
                self._below[parts[:i]] = self._below.get(parts[:i], 0) + 1
            self._cv.notify_all()

    def drain(self) -> None:
        """Wait until every job is done (redoing those sent back); raise the first job error."""
        with self._cv:
            while True:
                while self._busy > len(self._redo) and self._error is None:
                    self._cv.wait()
                self._raise()
                if not self._redo:
                    return
                self._cv.release()
                try:
                    self._do_redo()
                finally:
                    self._cv.acquire()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _do_redo(self) -> None:
        """Replace what is at the paths of the jobs sent back (the extractor's thread)."""
        with self._cv:
            jobs, self._redo = self._redo, []
        for i, job in enumerate(jobs):
            parts, pfd, m, data = job
            try:
                self._ex._clear(pfd, parts)
                self._ex.write_new(pfd, parts, m, data)
            except BaseException:
                with self._cv:
                    self._redo[:0] = jobs[i + 1 :]  # closed by close()
                self._done(job, None)
                raise
            self._done(job, None)

    def _done(self, job: _Job, error: BaseException | None) -> None:
        parts, pfd, _, data = job
        os.close(pfd)
        with self._cv:
            self._busy -= 1
            self._bytes -= len(data)
            self._files.discard(parts)
            for i in range(1, len(parts) + 1):
                key = parts[:i]
                if self._below[key] == 1:
                    del self._below[key]
                else:
                    self._below[key] -= 1
            if error is not None and self._error is None:
                self._error = error
            self._cv.notify_all()

    def close(self) -> None:
        """Stop the threads (queued jobs are dropped: the layer is being discarded or is done)."""
        with self._cv:
            self._stop = True
            for _, pfd, _, _ in (*self._jobs, *self._redo):
                os.close(pfd)
            self._jobs.clear()
            self._redo.clear()
            self._cv.notify_all()
        for t in self._threads:
            t.join()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                job = self._jobs.popleft()
            try:
                self._ex.write_new(job[1], job[0], job[2], job[3])
            except FileExistsError:
                with self._cv:
                    self._redo.append(job)
                    self._cv.notify_all()
                continue
            except BaseException as e:
                self._done(job, e)
                continue
            self._done(job, None)


_Job = tuple[tuple[str, ...], int, tarfile.TarInfo, bytes]


class Extractor:
    """Writes tar members under one root directory without ever following a symlink."""

    def __init__(self, root: Path, writers: int = 0) -> None:
        self.root_fd = os.open(root, _DIR_FLAGS)
        self.privileged = os.geteuid() == 0
        self._fds: dict[tuple[str, ...], int] = {}
        self._dir_times: list[tuple[tuple[str, ...], int]] = []
        self.skipped_devices: list[str] = []
        self.dropped_xattrs: list[str] = []
        if self.privileged:
            os.fchown(self.root_fd, 0, 0)
        os.fchmod(self.root_fd, 0o755)
        self._writers = _Writers(self, writers) if writers else None

    def close(self) -> None:
        if self._writers is not None:
            self._writers.close()
        self._drop_cache()
        os.close(self.root_fd)

    def log_dropped(self, what: str) -> None:
        """One log line naming the device nodes and xattrs the layer carried but did not get."""
        for action, names, why in (
            ("not creating device nodes", self.skipped_devices, "the engine gives the box its own /dev"),
            (
                "dropping xattrs",
                self.dropped_xattrs,
                "file capabilities, security labels and ACLs from images are not applied on the host",
            ),
        ):
            if names:
                shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
                log.warning("layer %s: %s %s: %s", what[:12], action, shown, why)

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
                os.fchown(fd, 0, 0)
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
    def add(self, m: tarfile.TarInfo, extract: Callable[[tarfile.TarInfo], IO[bytes] | None] | None) -> None:
        parts = self.split(m.name)
        w = self._writers
        if w is not None and w.busy_with(parts, m):
            w.drain()
        if len(self._fds) > 256:
            self._drop_cache()
        if not parts:
            if m.isdir():
                self._meta_fd(self.root_fd, m, parts)
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
            self._meta_fd(fd, m, parts)
            if opaque:
                os.setxattr(fd, "trusted.overlay.opaque", b"y")
            self._dir_times.append((parts, int(m.mtime)))
        elif m.isreg():
            if w is not None and m.size <= _WRITE_MAX_FILE and not m.sparse:
                src = extract(m) if extract else None
                data = src.read() if src is not None else b""
                if len(data) != m.size:
                    raise ImageError(f"layer member {m.name!r}: {len(data)} bytes of data, header says {m.size}")
                w.submit(parts, os.dup(pfd), m, data)
                return
            try:
                fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=pfd)
            except FileExistsError:  # replace what an earlier member put there (never follow)
                self._clear(pfd, parts)
                fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=pfd)
            try:
                src = extract(m) if extract else None
                if src is not None:
                    _copy(src, fd)
                self._meta_fd(fd, m, parts)
                os.utime(fd, ns=(int(m.mtime) * 10**9,) * 2)
            finally:
                os.close(fd)
        elif m.issym():
            if w is not None:
                w.submit(parts, os.dup(pfd), m, b"")
                return
            try:
                os.symlink(m.linkname, name, dir_fd=pfd)
            except FileExistsError:
                self._clear(pfd, parts)
                os.symlink(m.linkname, name, dir_fd=pfd)
            if self.privileged:
                os.chown(name, host_id(m.uid), host_id(m.gid), dir_fd=pfd, follow_symlinks=False)
            os.utime(name, ns=(int(m.mtime) * 10**9,) * 2, dir_fd=pfd, follow_symlinks=False)
        elif m.islnk():
            self._hardlink(parts, m.linkname)
        elif m.ischr() or m.isblk() or m.isfifo():
            self._special(pfd, parts, m)
        # other member types (e.g. GNU volume headers) carry no file: ignored

    def write_new(self, pfd: int, parts: tuple[str, ...], m: tarfile.TarInfo, data: bytes) -> None:
        """Create the regular file (with ``data``) or symlink ``m`` at ``parts`` in its parent ``pfd``;
        FileExistsError when something is there (a writer thread, or the extractor's after a clear)."""
        name = parts[-1]
        if m.issym():
            os.symlink(m.linkname, name, dir_fd=pfd)
            if self.privileged:
                os.chown(name, host_id(m.uid), host_id(m.gid), dir_fd=pfd, follow_symlinks=False)
            os.utime(name, ns=(int(m.mtime) * 10**9,) * 2, dir_fd=pfd, follow_symlinks=False)
            return
        fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=pfd)
        try:
            if data:
                _copy(io.BytesIO(data), fd)
            self._meta_fd(fd, m, parts)
            os.utime(fd, ns=(int(m.mtime) * 10**9,) * 2)
        finally:
            os.close(fd)

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
        target = name[len(WHITEOUT) :]
        if not target or target in (".", ".."):
            raise UnsafeLayerError(f"invalid whiteout {'/'.join(parts)!r}")
        self._require_root("whiteout")
        self._clear(pfd, (*parts[:-1], target))
        os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)
        os.chown(target, 0, 0, dir_fd=pfd, follow_symlinks=False)

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
        """FIFOs are made (without setuid/setgid/sticky bits); device nodes never are."""
        self._clear(pfd, parts)
        name = parts[-1]
        if not m.isfifo():
            self.skipped_devices.append("/".join(parts))
            return
        os.mkfifo(name, 0o600, dir_fd=pfd)
        if self.privileged:
            os.chown(name, host_id(m.uid), host_id(m.gid), dir_fd=pfd, follow_symlinks=False)
        # the name was just created by us in a private work dir: not a symlink
        os.chmod(name, m.mode & 0o777, dir_fd=pfd)

    def _meta_fd(self, fd: int, m: tarfile.TarInfo, parts: tuple[str, ...] = ()) -> None:
        if self.privileged:
            os.fchown(fd, host_id(m.uid), host_id(m.gid))
        os.fchmod(fd, m.mode & 0o7777)
        for key, value in m.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            xname = key[len("SCHILY.xattr.") :]
            if not keep_xattr(xname):
                if not xname.startswith("trusted.overlay."):
                    self.dropped_xattrs.append(f"{xname} on /{'/'.join(parts)}")
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
        if self._writers is not None:
            self._writers.drain()
        for parts, mtime in self._dir_times:
            try:
                fd = self.dir_fd(parts, create=False)
                os.utime(fd, ns=(mtime * 10**9,) * 2)
            except (OSError, UnsafeLayerError):
                continue


def _copy(src: IO[bytes], fd: int) -> int:
    """Copy ``src`` into the new, empty file ``fd``; 64 KiB runs of zeros become holes, so
    sparse files (and zero-filled ones) take no disk space for them. Returns the bytes copied."""
    pos = written = 0  # bytes copied; end of the last write
    while chunk := src.read(1 << 20):
        view = memoryview(chunk)
        n = len(chunk)
        pending = 0  # start of data not yet written
        for off in range(0, n - _HOLE + 1, _HOLE):
            if chunk[off : off + _HOLE] == _ZEROS:
                if off > pending:
                    _pwrite_all(fd, view[pending:off], pos + pending)
                pending = off + _HOLE
        if n > pending:
            _pwrite_all(fd, view[pending:], pos + pending)
            written = pos + n
        pos += n
    if written < pos:
        os.ftruncate(fd, pos)  # trailing hole
    return pos


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n
