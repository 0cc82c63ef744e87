"""Disk images of a VM box: the read-only image layers and the per-box writable disk.

The layer image is an ext4 filesystem holding layer ``i`` in directory ``/i`` with ownership
un-shifted (host ``uid_base + n`` becomes ``n``), overlayfs whiteouts (char 0:0) and
``trusted.overlay.*`` xattrs preserved, so the guest stacks ``/N-1:...:/0`` with overlayfs.
It is built once per ``image_id`` (e2fsprogs 1.47.0 cannot read tarballs yet, so the layers
are copied into a staging tree with corrected ownership and fed to ``mke2fs -d``).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ...errors import EngineError
from ..base import RootLayers

LOWER_CAPACITY = 64 << 30  # layer images are padded (sparse) to one size: VM snapshots fit any box
UID_COUNT = 65536
OVERFLOW_ID = 65534
BLOCK = 4096


def _unshift(value: int, base: int) -> int:
    if base <= value < base + UID_COUNT:
        return value - base
    return 0 if value < UID_COUNT and base == 0 else OVERFLOW_ID


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _copy_xattrs(src: str, dst: str) -> None:
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.ENODATA):
            return
        raise
    for name in names:
        try:
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
        except OSError as e:
            if e.errno not in (errno.ENOTSUP, errno.EPERM):
                raise


class _Stager:
    """Copies layer trees with un-shifted ownership and counts what mke2fs will need."""

    def __init__(self, uid_base: int) -> None:
        self.base = uid_base
        self.blocks = 0
        self.inodes = 0

    def copy_tree(self, src: Path, dst: Path) -> None:
        links: dict[tuple[int, int], str] = {}
        self._entry(str(src), str(dst), os.lstat(src), links)

    def _entry(self, src: str, dst: str, st: os.stat_result, links: dict[tuple[int, int], str]) -> None:
        mode = st.st_mode
        self.inodes += 1
        if stat.S_ISDIR(mode):
            os.mkdir(dst)
            self.blocks += 1
            with os.scandir(src) as it:
                for e in sorted(it, key=lambda e: e.name):
                    self._entry(e.path, os.path.join(dst, e.name), e.stat(follow_symlinks=False), links)
        elif stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in links:
                os.link(links[key], dst)
                return
            links[key] = dst
            shutil.copyfile(src, dst, follow_symlinks=False)
            self.blocks += (st.st_size + BLOCK - 1) // BLOCK + 1
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(src), dst)
            self.blocks += 1
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
            os.mknod(dst, mode, st.st_rdev)
        else:
            self.inodes -= 1
            return  # sockets are not part of images
        os.chown(dst, _unshift(st.st_uid, self.base), _unshift(st.st_gid, self.base), follow_symlinks=False)
        if not stat.S_ISLNK(mode):
            os.chmod(dst, stat.S_IMODE(mode))
        _copy_xattrs(src, dst)
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def layer_image_path(cache_dir: Path, root: RootLayers) -> Path:
    key = hashlib.sha256(f"{root.image_id}\0{root.uid_base}\0{len(root.layers)}".encode()).hexdigest()[:24]
    return cache_dir / f"layers-{key}.ext4"


def ensure_layer_image(cache_dir: Path, root: RootLayers) -> Path:
    """Return the cached read-only layer image of ``root``, building it if needed."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    image = layer_image_path(cache_dir, root)
    if image.exists():
        return _padded(image)
    with _locked(image.with_suffix(".lock")):
        if image.exists():
            return _padded(image)
        with tempfile.TemporaryDirectory(prefix="stage-", dir=cache_dir) as tmp:
            staging = Path(tmp) / "root"
            staging.mkdir()
            stager = _Stager(root.uid_base)
            for i, layer in enumerate(root.layers):
                stager.copy_tree(layer, staging / str(i))
            out = Path(tmp) / "image.ext4"
            _mkfs_from_dir(staging, out, stager.blocks, stager.inodes)
            _padded(out)
            os.chmod(out, 0o444)
            out.rename(image)
    return image


def _padded(image: Path) -> Path:
    """Grow ``image`` (sparse) to ``LOWER_CAPACITY`` unless it is already that big."""
    if image.stat().st_size < LOWER_CAPACITY:
        os.truncate(image, LOWER_CAPACITY)
    return image


def ensure_empty_lower(cache_dir: Path) -> Path:
    """A blank lower disk for boxes without layers and for snapshot templates."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / "empty-lower.img"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.truncate(LOWER_CAPACITY)
        tmp.rename(path)
    return path


def _mkfs_from_dir(src: Path, out: Path, blocks: int, inodes: int) -> None:
    size = (blocks + inodes // 16 + 2048) * BLOCK
    size = int(size * 1.15) + (16 << 20)
    for _ in range(4):
        with open(out, "wb") as f:
            f.truncate(size)
        res = subprocess.run(
            [
                "mke2fs",
                "-q",
                "-F",
                "-t",
                "ext4",
                "-b",
                str(BLOCK),
                "-I",
                "256",
                "-m",
                "0",
                "-N",
                str(inodes + 1024),
                "-O",
                "^has_journal,^resize_inode",
                "-L",
                "boxlite-lower",
                "-E",
                "root_owner=0:0,lazy_itable_init=1,nodiscard",
                "-d",
                str(src),
                str(out),
            ],
            capture_output=True,
            text=True,
        )
        if res.returncode == 0:
            return
        if "allocate" not in res.stderr and "No space" not in res.stderr:
            break
        size *= 2
    raise EngineError(f"mke2fs failed building the VM layer image: {res.stderr.strip()}")


def ensure_box_disk(path: Path, size_gb: float) -> bool:
    """Create the box's sparse writable ext4 disk unless it exists; True if created.

    An existing disk smaller than ``size_gb`` is grown (the guest sees the new size; the
    filesystem itself is not resized).
    """
    size = int(size_gb * (1 << 30))
    if path.exists():
        if path.stat().st_size < size:
            os.truncate(path, size)
        return False
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.truncate(size)
    res = subprocess.run(
        [
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext4",
            "-m",
            "0",
            "-L",
            "boxlite-upper",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
            str(tmp),
        ],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise EngineError(f"mke2fs failed creating the box disk: {res.stderr.strip()}")
    tmp.rename(path)
    return True
