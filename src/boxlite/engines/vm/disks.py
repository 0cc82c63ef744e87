"""Disk images of a VM box: the read-only image layers and the per-box writable disk.

The layer image is an ext4 filesystem holding layer ``i`` in directory ``/i`` with the image's
ownership, overlayfs whiteouts (char 0:0) and ``trusted.overlay.*`` xattrs, so the guest stacks
``/N-1:...:/0`` with overlayfs. It is built once per ``image_id`` by ``mke2fs -d`` straight from
the store's layer dirs (e2fsprogs 1.47.0 cannot read tarballs yet): a helper process binds each
layer on ``<staging>/<i>`` in a mount namespace of its own, then runs mke2fs. Layers of an older
store, shifted by ``uid_base``, are bound id-mapped back (``uid_base + n`` reads as ``n``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ...errors import EngineError
from ..base import RootLayers

LOWER_CAPACITY = 64 << 30  # layer images are padded (sparse) to one size: VM snapshots fit any box
UID_COUNT = 65536
BLOCK = 4096
PACKAGE_PARENT = Path(__file__).resolve().parents[3]  # the directory holding ``boxlite/``

# Runs as root in a child process: private mount namespace, one read-only bind per layer, exec mke2fs.
_BIND_AND_MKFS = """
import json, os, sys
cfg = json.loads(sys.argv[1])
sys.path.insert(0, cfg["path"])
from boxlite.agent import linux
linux.unshare(linux.CLONE_NEWNS)
linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
userns = linux.mapping_userns(cfg["uid_base"], 0, cfg["count"]) if cfg["shifted"] else None
for i, layer in enumerate(cfg["layers"]):
    target = os.open(os.path.join(cfg["staging"], str(i)), os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW)
    linux.bind_idmapped(layer, target, userns, True)
    os.close(target)
os.execvp(cfg["argv"][0], cfg["argv"])
"""


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _measure(layer: Path) -> tuple[int, int]:
    """(blocks, inodes) mke2fs will need for one layer tree (never following symlinks)."""
    blocks = inodes = 0
    for dirpath, dirnames, filenames in os.walk(layer):
        inodes += 1
        blocks += 1
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISDIR(st.st_mode):
                continue  # counted when walked (os.walk lists symlinks to dirs here too: counted below)
            if stat.S_ISSOCK(st.st_mode):
                continue  # sockets are not part of images
            inodes += 1
            if stat.S_ISREG(st.st_mode):
                blocks += (st.st_size + BLOCK - 1) // BLOCK + 1
            elif stat.S_ISLNK(st.st_mode):
                blocks += 1
    return blocks, inodes


def layer_image_path(cache_dir: Path, root: RootLayers) -> Path:
    # uid_base stays in the key: images built before layers were stored unshifted are the same
    # (un-shifted) content and are reused as they are.
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
            os.chmod(staging, 0o755)
            blocks = inodes = 0
            for i, layer in enumerate(root.layers):
                (staging / str(i)).mkdir()
                b, n = _measure(layer)
                blocks, inodes = blocks + b, inodes + n
            out = Path(tmp) / "image.ext4"
            _mkfs_from_layers(root, staging, out, blocks, inodes)
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


def _mkfs_from_layers(root: RootLayers, staging: Path, out: Path, blocks: int, inodes: int) -> None:
    size = (blocks + inodes // 16 + 2048) * BLOCK
    size = int(size * 1.15) + (16 << 20)
    for _ in range(4):
        with open(out, "wb") as f:
            f.truncate(size)
        argv = [
            "mke2fs", "-q", "-F", "-t", "ext4", "-b", str(BLOCK), "-I", "256", "-m", "0",
            "-N", str(inodes + 1024), "-O", "^has_journal,^resize_inode", "-L", "boxlite-lower",
            "-E", "root_owner=0:0,lazy_itable_init=1,nodiscard", "-d", str(staging), str(out),
        ]  # fmt: skip
        cfg = {
            "path": str(PACKAGE_PARENT),
            "staging": str(staging),
            "layers": [str(p) for p in root.layers],
            "shifted": root.shifted,
            "uid_base": root.uid_base,
            "count": UID_COUNT,
            "argv": argv,
        }
        res = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _BIND_AND_MKFS, json.dumps(cfg)], capture_output=True, text=True
        )
        if res.returncode == 0:
            return
        if "allocate" not in res.stderr and "No space" not in res.stderr:
            break
        size *= 2
    raise EngineError(f"mke2fs failed building the VM layer image: {res.stderr.strip()[-2000:]}")


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
