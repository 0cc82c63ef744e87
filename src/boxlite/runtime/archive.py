"""Export a box to one ``.boxlite`` archive and import it back (both engines, same engine).

The archive is a tar (optionally gzip) whose single top-level directory ``boxlite-archive/``
holds, written in this order:

* ``writable/<i>/...`` (namespace): the box's layers, bottom first (frozen ones, then the
  writable one), as plain trees; ``writable/<i>.meta.json``: every entry's owner (box ids, not
  host ids), full mode, overlay whiteouts and opaque directories (tar readers that trust
  nothing drop those, so they travel as data);
* ``writable/disk.qcow2`` (VM): the box's disk chain flattened into one qcow2 image;
* ``image/``: the image, unless left out: an OCI layout of the stored blobs, or the root
  filesystem tree (+ ``image/rootfs.meta.json``) of a box created from a directory;
* ``manifest.json`` last: format version, the box's config, the image reference and the size
  and sha256 of every other regular file.

It is written to a temporary file in the destination directory and renamed when complete.
Import treats it as hostile: the safe extractor (``fsutil.extract``: no path escapes, no links
out, no devices, byte/entry/time limits) unpacks it into a partial box dir; then every file is
checked against the manifest (nothing missing, nothing extra, digests equal), metadata entries
are applied through ``O_NOFOLLOW`` directory fds, a VM disk must be a qcow2 without backing or
data file; only then does the box get its record. A failure leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import json
import os
import secrets
import stat
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..engines import diskchain
from ..engines.diskchain import ChainState, layer_format, layer_path
from ..errors import (
    BoxliteError,
    ConfigError,
    InvalidStateError,
    NotFoundError,
    ResourceExhaustedError,
    StorageError,
    UnsafeArchiveError,
    UnsupportedOptionError,
)
from ..fsutil.dirfd import DirWalker, lstat_at, remove_tree, split_path
from ..fsutil.extract import Limits, extract_archive
from .config import BoxConfig, ImageDefaults
from .locks import box_lock
from .snapshots import (
    NOT_RUNNING,
    TARGET_FILE,
    TMP_MARK,
    check_box_name,
    check_engine,
    commit_box,
    copy_layer,
    load_state,
    make_top,
    new_layer_id,
    new_partial,
    owner_token,
    qemu_img,
    quiesced,
)
from .state import BoxRecord, now

if TYPE_CHECKING:
    from .lifecycle import BoxRuntime

FORMAT = "boxlite-archive"
VERSION = 1
TOP = "boxlite-archive"
SUFFIX = ".boxlite"
MAX_IMPORT_BYTES = int(os.environ.get("BOXLITE_MAX_IMPORT_BYTES", str(64 << 30)))
"""Unpacked bytes one import may write (env ``BOXLITE_MAX_IMPORT_BYTES``)."""
MAX_IMPORT_ENTRIES = 2_000_000
IMPORT_TIMEOUT = 3600.0
MAX_MANIFEST_BYTES = 16 << 20
MAX_META_BYTES = 256 << 20
MAX_VM_DISK_BYTES = 1 << 40
"""Largest virtual size of an imported VM disk."""
ID_RANGE = 65536  # box uids/gids an archive may name
HASH_CHUNK = 1 << 20


@dataclass
class ExportRequest:
    dest: str
    include_image: bool = True
    compression: str = "none"  # "none" | "gzip"
    max_bytes: int | None = None  # largest archive written


class _Capped:
    """The archive file, refusing to grow past ``max_bytes`` (``ExportOptions.max_bytes``)."""

    def __init__(self, f: IO[bytes], max_bytes: int) -> None:
        self._f = f
        self._max = max_bytes
        self.flush, self.tell = f.flush, f.tell

    def write(self, data: bytes) -> int:
        if self._f.tell() + len(data) > self._max:
            raise ResourceExhaustedError(
                f"the archive would be larger than {self._max} bytes (ExportOptions.max_bytes)"
            )
        return self._f.write(data)


# --- export -------------------------------------------------------------------------------
def output_path(dest: str | os.PathLike[str], rec: BoxRecord) -> Path:
    path = Path(dest).expanduser().absolute()
    if path.is_dir():
        path = path / f"{rec.name or rec.id}{SUFFIX}"
    if not path.parent.is_dir():
        raise StorageError(f"cannot export to {path}: {path.parent} is not a directory")
    if not os.access(path.parent, os.W_OK):
        raise StorageError(f"cannot export to {path}: {path.parent} is not writable")
    return path


class _Writer:
    """A tar being written, with the size and sha256 of every regular file."""

    def __init__(self, fileobj: IO[bytes], compression: str) -> None:
        if compression not in ("none", "gzip"):
            raise ConfigError(f"unknown compression {compression!r} (none, gzip)")
        self._gz = (
            gzip.GzipFile(fileobj=fileobj, mode="wb", compresslevel=1, mtime=0) if compression == "gzip" else None
        )
        self.tar = tarfile.TarFile(
            fileobj=self._gz or fileobj, mode="w", format=tarfile.PAX_FORMAT, copybufsize=HASH_CHUNK
        )  # 1 MiB copies: the default 16 KiB made export twice as slow
        self.members: dict[str, list[Any]] = {}

    def dir(self, rel: str, mode: int = 0o755, mtime: float = 0) -> None:
        info = tarfile.TarInfo(f"{TOP}/{rel}".rstrip("/"))
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode & 0o777, int(mtime)
        self.tar.addfile(info)

    def file(self, rel: str, src: IO[bytes], size: int, mode: int = 0o644, mtime: float = 0) -> None:
        info = tarfile.TarInfo(f"{TOP}/{rel}")
        info.size, info.mode, info.mtime = size, mode & 0o777, int(mtime)
        hashed = _Hashing(src)
        self.tar.addfile(info, hashed)
        if hashed.count != size:
            raise StorageError(f"{rel} changed size while it was exported")
        self.members[rel] = [size, hashed.sha.hexdigest()]

    def data(self, rel: str, body: bytes) -> None:
        self.file(rel, io.BytesIO(body), len(body))

    def link(self, rel: str, target_rel: str, symlink: bool, mtime: float = 0) -> None:
        info = tarfile.TarInfo(f"{TOP}/{rel}")
        info.type = tarfile.SYMTYPE if symlink else tarfile.LNKTYPE
        info.linkname = target_rel if symlink else f"{TOP}/{target_rel}"
        info.mode, info.mtime = 0o777, int(mtime)
        self.tar.addfile(info)
        if not symlink:  # the link is a file of the archive too (same size and digest)
            self.members[rel] = self.members[target_rel]

    def close(self) -> None:
        self.tar.close()
        if self._gz is not None:
            self._gz.close()


class _Hashing(io.RawIOBase):
    def __init__(self, src: IO[bytes]) -> None:
        self.src, self.sha, self.count = src, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        data = self.src.read(n)
        self.sha.update(data)
        self.count += len(data)
        return data


def write_tree(w: _Writer, root: Path, rel: str, shift: int) -> None:
    """Add tree ``root`` under ``rel``, and ``rel.meta.json``: owners (minus ``shift``), modes,
    whiteouts, opaque dirs. Sockets and devices other than whiteouts are left out."""
    entries: list[list[Any]] = []
    inodes: dict[tuple[int, int], str] = {}

    def ids(st: os.stat_result) -> tuple[int, int]:
        u, g = st.st_uid - shift, st.st_gid - shift
        return (u if 0 <= u < ID_RANGE else 65534), (g if 0 <= g < ID_RANGE else 65534)

    def add(path: str, name: str) -> None:
        st = os.lstat(path)
        arc = f"{rel}/{name}" if name != "." else rel
        uid, gid = ids(st)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            opaque = False
            with contextlib.suppress(OSError):
                opaque = os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
            w.dir(arc, mode, st.st_mtime)
            entries.append([name, "d", stat.S_IMODE(mode), uid, gid, opaque])
        elif stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in inodes:
                w.link(arc, inodes[key], symlink=False, mtime=st.st_mtime)
            else:
                inodes[key] = arc
                with open(path, "rb") as f:
                    w.file(arc, f, st.st_size, mode, st.st_mtime)
            entries.append([name, "f", stat.S_IMODE(mode), uid, gid, False])
        elif stat.S_ISLNK(mode):
            w.link(arc, os.readlink(path), symlink=True, mtime=st.st_mtime)
            entries.append([name, "l", 0o777, uid, gid, False])
        elif stat.S_ISCHR(mode) and st.st_rdev == 0:
            entries.append([name, "w", stat.S_IMODE(mode), uid, gid, False])
        elif stat.S_ISFIFO(mode):
            entries.append([name, "p", stat.S_IMODE(mode), uid, gid, False])

    if not root.exists():
        w.dir(rel)
        entries.append([".", "d", 0o755, 0, 0, False])
    else:
        add(str(root), ".")
        for dirpath, dirnames, filenames in os.walk(root):
            base = os.path.relpath(dirpath, root)
            for name in sorted(dirnames + filenames):
                add(os.path.join(dirpath, name), name if base == "." else f"{base}/{name}")
    w.data(f"{rel}.meta.json", json.dumps({"entries": entries}).encode())


def _write_oci(w: _Writer, rt: BoxRuntime, image_id: str) -> None:
    from ..images.catalog import read_image

    found = rt.images.store.find(image_id)
    info = found[0] if found else None
    if info is None:
        raise NotFoundError(f"image {image_id} is no longer in the store: export with include_image=False")
    store = rt.images.store
    img = read_image(store, info.digest)
    manifest_bytes = store.read_blob(info.digest, "manifest")
    media = json.loads(manifest_bytes).get("mediaType") or "application/vnd.oci.image.manifest.v1+json"
    w.data("image/oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": media, "digest": info.digest, "size": len(manifest_bytes),
            "annotations": {"org.opencontainers.image.ref.name": info.reference},
        }],
    }  # fmt: skip
    w.data("image/index.json", json.dumps(index).encode())
    for digest in dict.fromkeys([info.digest, img.manifest.config.digest, *(d.digest for d in img.manifest.layers)]):
        path = store.blob_path(digest)
        with open(path, "rb") as f:
            w.file(f"image/blobs/sha256/{digest.split(':', 1)[1]}", f, os.fstat(f.fileno()).st_size)


def image_kind(rec: BoxRecord) -> str:
    if rec.image_id.startswith("rootfs:"):
        return "default" if rec.config.rootfs_path is None and rec.config.image is None else "rootfs"
    return "oci"


async def export(rt: BoxRuntime, box_id: str, req: ExportRequest) -> Path:
    """Write the box to one archive; returns its path. A running box is quiesced while its
    writable layer is copied (namespace) or its disk flattened (VM)."""
    rt.check_open()
    async with box_lock(rt.layout(box_id).lock):
        rec = rt.record(box_id, locked=True)
        check_engine(rec)
        if rec.state not in (*NOT_RUNNING, "running", "paused"):
            raise InvalidStateError(f"box {rec.id} is {rec.state}: cannot export it now")
        out = output_path(req.dest, rec)
        scratch = new_partial(rt, "x" + secrets.token_hex(6))
        tmp = out.with_name(f".{out.name}{TMP_MARK}{secrets.token_hex(4)}")
        (scratch / TARGET_FILE).write_text(str(tmp))
        try:
            try:
                with open(tmp, "xb") as f:
                    out_file: Any = _Capped(f, req.max_bytes) if req.max_bytes else f
                    await _write_archive(rt, rec, req, out_file, scratch)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, out)
            except OSError as e:
                if e.errno in (28, 122, 27):  # ENOSPC, EDQUOT, EFBIG
                    raise ResourceExhaustedError(f"export to {out}: {e.strerror}") from e
                raise StorageError(f"export to {out}: {e}") from e
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            await asyncio.to_thread(remove_tree, scratch)
        return out


async def _write_archive(rt: BoxRuntime, rec: BoxRecord, req: ExportRequest, f: IO[bytes], scratch: Path) -> None:
    box_dir = rt.layout(rec.id).root
    state = load_state(box_dir, rec.engine)
    w = _Writer(f, req.compression)
    writable: dict[str, Any]
    if rec.engine == "vm":
        disk = scratch / "disk.qcow2"
        top = layer_path(box_dir, state.top, "vm")
        if not top.exists():  # never started: it has no disk yet
            from ..engines.vm.disks import ensure_box_disk
            from ..engines.vm.engine import DEFAULT_DISK_GB

            await asyncio.to_thread(ensure_box_disk, top, rec.config.disk_size_gb or DEFAULT_DISK_GB)
        async with quiesced(rt, rec):  # flatten the chain: one image, no backing file
            await asyncio.to_thread(
                qemu_img, "convert", "-U", "-q", "-f", layer_format(state.top), "-O", "qcow2", str(top), str(disk)
            )
        with open(disk, "rb") as src:
            await asyncio.to_thread(w.file, "writable/disk.qcow2", src, os.fstat(src.fileno()).st_size, 0o600)
        writable = {"kind": "qcow2", "disk": "writable/disk.qcow2"}
    else:
        layers = [layer_path(box_dir, i, rec.engine) for i in reversed(state.ancestry(state.head))]
        top = layer_path(box_dir, state.top, rec.engine)
        if rec.state in ("running", "paused"):
            copy = scratch / "top"
            async with quiesced(rt, rec):
                await asyncio.to_thread(copy_layer, top, copy, rec.engine, "dir")
            top = copy
        w.dir("writable")
        for i, layer in enumerate([*layers, top]):
            await asyncio.to_thread(write_tree, w, layer, f"writable/{i}", rec.uid_base)
        writable = {"kind": "overlay", "layers": len(layers) + 1}
    kind = image_kind(rec)
    included = req.include_image and kind != "default"
    if included and kind == "oci":
        await asyncio.to_thread(_write_oci, w, rt, rec.image_id)
    elif included:
        root = Path(rec.layers[0]) if len(rec.layers) == 1 else None
        if root is None:
            raise UnsupportedOptionError("include_image", "a box from a directory has one layer")
        shift = rec.uid_base if rt.images.layers_shifted([root]) else 0
        await asyncio.to_thread(write_tree, w, root, "image/rootfs", shift)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "engine": rec.engine,
        "exported_at": int(time.time()),
        "box": {
            "id": rec.id,
            "name": rec.name,
            "state": rec.state,
            "config": {**rec.config.to_json(), "secrets": []},  # secret values never leave the host
            "image": rec.image,
            "image_id": rec.image_id,
            "image_config": rec.image_config.to_json(),
        },
        "writable": writable,
        "image": {"kind": kind, "included": included, "reference": rec.image},
        "members": w.members,
    }
    w.tar.addfile(_info("manifest.json", len(body := json.dumps(manifest).encode())), io.BytesIO(body))
    await asyncio.to_thread(w.close)


def _info(rel: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(f"{TOP}/{rel}")
    info.size, info.mode = size, 0o644
    return info


# --- import -------------------------------------------------------------------------------
def _opener(path: Path) -> tuple[IO[bytes], Callable[[int], bytes]]:
    f = open(path, "rb")  # noqa: SIM115 (the caller closes it)
    magic = f.read(2)
    f.seek(0)
    if magic == b"\x1f\x8b":
        gz = gzip.GzipFile(fileobj=f, mode="rb")

        def read(n: int) -> bytes:
            try:
                return gz.read(n)
            except (OSError, EOFError) as e:
                raise UnsafeArchiveError(f"corrupt or truncated archive: {e}") from None

        return f, read
    return f, f.read


def _load_json(path: Path, cap: int, what: str) -> Any:
    try:
        if path.is_symlink() or not path.is_file():
            raise UnsafeArchiveError(f"archive has no {what}")
        if path.stat().st_size > cap:
            raise UnsafeArchiveError(f"{what} is larger than {cap} bytes")
        return json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise UnsafeArchiveError(f"{what} is not valid JSON: {e}") from None


def _sha256(path: str) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def verify_members(stage: Path, manifest: dict[str, Any]) -> None:
    """Every regular file is listed with its size and digest, and every listed one is there."""
    members = manifest.get("members")
    if not isinstance(members, dict):
        raise UnsafeArchiveError("manifest has no member list")
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(stage):
        for name in dirnames:  # symlinks to directories are listed here (never followed)
            rel = os.path.relpath(os.path.join(dirpath, name), stage)
            if os.path.islink(os.path.join(dirpath, name)) and not rel.startswith(("writable/", "image/rootfs/")):
                raise UnsafeArchiveError(f"symlink {rel!r} outside the box's layers")
        for name in filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, stage)
            st = os.lstat(path)
            if rel == "manifest.json" or not stat.S_ISREG(st.st_mode):
                if stat.S_ISLNK(st.st_mode) and not rel.startswith(("writable/", "image/rootfs/")):
                    raise UnsafeArchiveError(f"symlink {rel!r} outside the box's layers")
                continue
            want = members.get(rel)
            if not (isinstance(want, list) and len(want) == 2):
                raise UnsafeArchiveError(f"{rel!r} is not in the archive's manifest")
            if st.st_size != want[0] or _sha256(path) != want[1]:
                raise UnsafeArchiveError(f"{rel!r} does not match its digest in the manifest (tampered?)")
            seen.add(rel)
    missing = set(members) - seen
    if missing:
        raise UnsafeArchiveError(f"archive is truncated: {len(missing)} member(s) missing, e.g. {sorted(missing)[0]!r}")


def apply_meta(root: Path, meta_path: Path, shift: int) -> None:
    """Give tree ``root`` the owners (plus ``shift``), modes, whiteouts and opaque flags its
    metadata lists; every entry of the tree must be listed, links are never followed."""
    meta = _load_json(meta_path, MAX_META_BYTES, meta_path.name)
    entries = meta.get("entries") if isinstance(meta, dict) else None
    if not isinstance(entries, list):
        raise UnsafeArchiveError(f"{meta_path.name}: no entry list")
    listed: set[str] = set()
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    walker = DirWalker(root_fd)
    try:
        dirs_last: list[tuple[tuple[str, ...], int, int, int]] = []
        for e in entries:
            if not (isinstance(e, list) and len(e) == 6):
                raise UnsafeArchiveError(f"{meta_path.name}: malformed entry")
            name, kind, mode, uid, gid, opaque = e
            ok = isinstance(name, str) and kind in ("d", "f", "l", "w", "p")
            ok = ok and all(isinstance(x, int) and not isinstance(x, bool) for x in (mode, uid, gid))
            if not ok or not (0 <= uid < ID_RANGE and 0 <= gid < ID_RANGE and 0 <= mode <= 0o7777):
                raise UnsafeArchiveError(f"{meta_path.name}: invalid entry {str(e)[:100]}")
            parts = split_path(name, 4096, 1024)
            rel = "/".join(parts) or "."
            if rel in listed:
                raise UnsafeArchiveError(f"{meta_path.name}: {rel!r} listed twice")
            listed.add(rel)
            if not parts:
                if kind != "d":
                    raise UnsafeArchiveError(f"{meta_path.name}: the layer root must be a directory")
                os.chown(root_fd, uid + shift, gid + shift)
                os.chmod(root_fd, mode)
                continue
            pfd = walker.open_dir(parts[:-1], create=False)
            leaf = parts[-1]
            st = lstat_at(pfd, leaf)
            if kind == "w" or kind == "p":
                if st is not None:
                    raise UnsafeArchiveError(f"{meta_path.name}: {rel!r} exists and is a special file too")
                if kind == "w":
                    os.mknod(leaf, stat.S_IFCHR | (mode & 0o777), os.makedev(0, 0), dir_fd=pfd)
                else:
                    os.mkfifo(leaf, mode & 0o777, dir_fd=pfd)
                os.chown(leaf, uid + shift, gid + shift, dir_fd=pfd, follow_symlinks=False)
                continue
            want = {"d": stat.S_ISDIR, "f": stat.S_ISREG, "l": stat.S_ISLNK}[kind]
            if st is None or not want(st.st_mode):
                raise UnsafeArchiveError(f"{meta_path.name}: {rel!r} is not in the archive as a {kind}")
            os.chown(leaf, uid + shift, gid + shift, dir_fd=pfd, follow_symlinks=False)
            if kind == "d":
                dirs_last.append((parts, mode, 1 if opaque is True else 0, 0))
            elif kind == "f":
                os.chmod(leaf, mode, dir_fd=pfd)  # a regular file (checked above; nobody else writes here)
        for parts, mode, opaque, _ in dirs_last:
            fd = walker.open_dir(parts, create=False)
            if opaque:
                os.setxattr(fd, "trusted.overlay.opaque", b"y")
            os.chmod(fd, mode)
    finally:
        walker.close()
        os.close(root_fd)
    for dirpath, dirnames, filenames in os.walk(root):  # nothing the metadata does not cover
        for name in dirnames + filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            if rel not in listed:
                raise UnsafeArchiveError(f"{meta_path.name}: {rel!r} has no metadata")


def check_vm_disk(path: Path) -> int:
    """A disk from an archive must be a plain qcow2: no backing file, no external data file
    (either would make QEMU read a host file), a bounded size, no corruption."""
    try:
        info = json.loads(qemu_img("info", "--output=json", "-f", "qcow2", str(path)))
    except BoxliteError as e:
        raise UnsafeArchiveError(f"the archive's disk is not a valid qcow2 image: {e}") from None
    except ValueError:
        raise UnsafeArchiveError("qemu-img info gave no JSON for the archive's disk") from None
    if info.get("format") != "qcow2":
        raise UnsafeArchiveError("the archive's disk is not qcow2")
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise UnsafeArchiveError("the archive's disk names a backing file")
    data = ((info.get("format-specific") or {}).get("data")) or {}
    if data.get("data-file") or data.get("data-file-raw"):
        raise UnsafeArchiveError("the archive's disk names an external data file")
    size = info.get("virtual-size")
    if not isinstance(size, int) or not 0 < size <= MAX_VM_DISK_BYTES:
        raise UnsafeArchiveError(f"the archive's disk has an invalid size {size!r}")
    try:
        qemu_img("check", "-q", "-f", "qcow2", str(path))
    except BoxliteError as e:
        raise UnsafeArchiveError(f"the archive's disk is corrupt: {e}") from None
    return size


def _box_config(manifest: dict[str, Any], trusted: bool) -> tuple[BoxConfig, ImageDefaults]:
    box = manifest.get("box")
    if not isinstance(box, dict):
        raise UnsafeArchiveError("manifest has no box section")
    try:
        config = BoxConfig.from_json(box.get("config") or {})
        image_config = ImageDefaults.from_json(box.get("image_config") or {})
    except (ConfigError, ValueError, TypeError, KeyError) as e:
        raise UnsafeArchiveError(f"manifest holds an invalid box config: {e}") from None
    if config.volumes:
        raise UnsafeArchiveError("the archived box mounts host paths (volumes): refused; recreate them after import")
    return config, image_config


def _frozen_iter(manifest: dict[str, Any]) -> Iterator[int]:
    n = (manifest.get("writable") or {}).get("layers")
    if not isinstance(n, int) or not 1 <= n <= diskchain.MAX_DEPTH + 1:
        raise UnsafeArchiveError("manifest: invalid layer count")
    return iter(range(n))


async def import_box(
    rt: BoxRuntime,
    archive: str | os.PathLike[str],
    name: str | None,
    trusted: bool = True,
    engine: str | None = None,
) -> BoxRecord:
    """A new stopped box from an archive ``export`` wrote. ``trusted=False`` (server uploads):
    the archive may not name host paths at all. ``engine``: the new box's engine (default: the
    archive's); a namespace archive can become a VM box (its layers merged into an ext4 disk)."""
    from .lifecycle import default_rootfs, new_box_id

    rt.check_open()
    check_box_name(rt, name)
    path = Path(archive)
    if not path.is_file():
        raise NotFoundError(f"no archive at {path}")
    new_id = new_box_id()
    partial = new_partial(rt, new_id)
    try:
        stage = partial / "stage"
        f, read = _opener(path)
        limits = Limits(MAX_IMPORT_BYTES, MAX_IMPORT_ENTRIES, time.monotonic() + IMPORT_TIMEOUT)
        try:
            await asyncio.to_thread(extract_archive, read, str(stage), TOP, include_parent=False, limits=limits)
        except UnsafeArchiveError as e:
            raise UnsafeArchiveError(f"{path}: {e}") from None
        finally:
            f.close()
        if not stage.is_dir():
            raise UnsafeArchiveError(f"{path}: not a box archive")
        manifest = _load_json(stage / "manifest.json", MAX_MANIFEST_BYTES, "manifest.json (truncated archive?)")
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise UnsafeArchiveError(f"{path}: not a box archive")
        if manifest.get("version") != VERSION:
            raise UnsupportedOptionError(
                "archive", f"format version {manifest.get('version')!r} (this runtime reads {VERSION})"
            )
        await asyncio.to_thread(verify_members, stage, manifest)
        source = manifest.get("engine")
        if source not in ("namespace", "vm"):
            raise UnsafeArchiveError(f"{path}: unknown engine {source!r}")
        engine = engine or source
        if engine not in ("namespace", "vm"):
            raise ConfigError(f"unknown engine {engine!r}")
        if (source, engine) == ("vm", "namespace"):
            raise UnsupportedOptionError(
                "import_box(engine='namespace')",
                "a VM box's disk is an ext4 image its guest wrote; reading it on the host would mean mounting a "
                "box-written filesystem in the host kernel",
            )
        config, image_config = _box_config(manifest, trusted)
        # --- the image --------------------------------------------------------------------
        image = manifest.get("image") or {}
        kind, reference = image.get("kind"), manifest["box"].get("image")
        if not isinstance(reference, str) or len(reference) > 4096:
            raise UnsafeArchiveError("manifest: invalid image reference")
        host_path = config.rootfs_path
        if image.get("included"):
            config = replace(config, rootfs_path=None)
        elif host_path and not trusted:
            raise UnsafeArchiveError("the archived box names a host directory as its root filesystem: refused")
        if kind == "oci" and image.get("included"):
            infos = await asyncio.to_thread(rt.images.load, stage / "image")
            prepared = await rt.images.resolve(image=infos[0].digest)
        elif kind == "rootfs" and image.get("included"):
            rootfs = stage / "image" / "rootfs"
            if not rootfs.is_dir() or rootfs.is_symlink():
                raise UnsafeArchiveError(f"{path}: the archive's image is missing")
            await asyncio.to_thread(apply_meta, rootfs, stage / "image" / "rootfs.meta.json", 0)
            prepared = await rt.images.resolve(rootfs_path=str(rootfs))
        elif kind in ("oci", "rootfs") and host_path:  # trusted: the directory/layout named
            prepared = await rt.images.resolve(rootfs_path=host_path)
        elif kind == "oci":
            prepared = await rt.images.resolve(image=reference)
        elif kind == "default":
            prepared = await rt.images.resolve(rootfs_path=str(await asyncio.to_thread(default_rootfs, rt.home)))
        else:
            raise UnsafeArchiveError(f"{path}: the archive neither holds its image nor names one this runtime can use")
        # --- the writable layers ------------------------------------------------------------
        uid_base = rt.images.uid_base
        state = ChainState(top="")
        head: str | None = None
        if source == "namespace" and engine == "vm":
            disk = partial / "vm" / "disk.ext4"  # the box's own raw disk, as a VM box starts with
            size = config.disk_size_gb or _vm_default_disk_gb()
            await asyncio.to_thread(_layers_to_vm_disk, stage, manifest, disk, size)
        elif engine == "vm":
            disk = stage / "writable" / "disk.qcow2"
            if (manifest.get("writable") or {}).get("kind") != "qcow2" or not disk.is_file():
                raise UnsafeArchiveError(f"{path}: a VM archive without its disk")
            await asyncio.to_thread(check_vm_disk, disk)
            base = new_layer_id()
            dest = layer_path(partial, base, "vm")
            dest.parent.mkdir(mode=0o700, parents=True)
            os.rename(disk, dest)
            state.parents[base] = None
            head = base
        else:  # the layers merged into one frozen layer (an import flattens the chain)
            head = new_layer_id()
            dest = layer_path(partial, head, "namespace")
            dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            await asyncio.to_thread(_merged_layers, stage, manifest, dest, uid_base)
            state.parents[head] = None
        if head is not None or engine == "namespace":
            state.head = head
            model = layer_path(partial, head, engine) if head else None
            await asyncio.to_thread(make_top, partial, engine, state, head, uid_base, model)
            diskchain.write_state(partial, state)
        await asyncio.to_thread(remove_tree, stage)
        rec = BoxRecord(
            id=new_id,
            name=name,
            state="stopped",
            engine=engine,
            created_at=now(),
            image=reference,
            image_id=prepared.image_id,
            layers=[str(p) for p in prepared.layers],
            uid_base=uid_base,
            config=replace(config, engine=engine),
            image_config=image_config,
        )
        commit_box(rt, partial, rec)
        return rec
    except OSError as e:
        if e.errno in (28, 122, 27):
            raise ResourceExhaustedError(f"import of {path}: {e.strerror}") from e
        raise StorageError(f"import of {path}: {e}") from e
    finally:
        if partial.exists():
            await asyncio.to_thread(remove_tree, partial)


def _vm_default_disk_gb() -> float:
    from ..engines.vm.engine import DEFAULT_DISK_GB

    return DEFAULT_DISK_GB


def merge_layers(layers: list[Path], merged: Path) -> None:
    """Stack overlay layer trees (bottom first) into one upper tree at ``merged``: a whiteout
    removes what lies under it and stays (it may hide an image file), an opaque directory
    replaces the one under it, anything else replaces the entry under it. Trees are ours (the
    staging dir), links in them are data and are never followed."""
    os.rename(layers[0], merged)
    for layer in layers[1:]:
        for dirpath, dirnames, filenames in os.walk(layer):
            rel = os.path.relpath(dirpath, layer)
            target_dir = os.path.normpath(os.path.join(merged, rel))
            keep: list[str] = []
            for name in dirnames + filenames:
                src, dst = os.path.join(dirpath, name), os.path.join(target_dir, name)
                st = os.lstat(src)
                old = _lstat(dst)
                if stat.S_ISDIR(st.st_mode) and old is not None and stat.S_ISDIR(old.st_mode) and not _opaque(src):
                    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
                    os.chmod(dst, stat.S_IMODE(st.st_mode))
                    keep.append(name)  # merge its children
                    continue
                if old is not None:
                    remove_tree(dst) if stat.S_ISDIR(old.st_mode) else os.unlink(dst)
                os.rename(src, dst)
            dirnames[:] = [d for d in dirnames if d in keep]
        remove_tree(layer)


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _opaque(path: str) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


def _merged_layers(stage: Path, manifest: dict[str, Any], dest: Path, shift: int) -> None:
    """A namespace archive's layers, their metadata applied (ids + ``shift``), merged at ``dest``."""
    trees = []
    for i in _frozen_iter(manifest):
        tree = stage / "writable" / str(i)
        if not tree.is_dir() or tree.is_symlink():
            raise UnsafeArchiveError(f"layer {i} is missing from the archive")
        apply_meta(tree, stage / "writable" / f"{i}.meta.json", shift)
        trees.append(tree)
    merge_layers(trees, dest)


def _layers_to_vm_disk(stage: Path, manifest: dict[str, Any], disk: Path, size_gb: float) -> None:
    """A namespace archive's layers as a VM box disk: merged into ``upper/`` (owners as the box
    sees them: no shift) of a new ext4 image made by ``mke2fs -d``."""
    root = stage / "vmroot"
    root.mkdir(mode=0o755)
    (root / "work").mkdir(mode=0o700)
    _merged_layers(stage, manifest, root / "upper", 0)
    disk.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(disk, "wb") as f:
        f.truncate(int(size_gb * (1 << 30)))
    argv = [
        "mke2fs", "-q", "-F", "-t", "ext4", "-m", "0", "-L", "boxlite-upper", "-E",
        "root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1,nodiscard", "-d", str(root), str(disk),
    ]  # fmt: skip
    res = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    if res.returncode != 0:
        msg = res.stderr.strip()[-500:]
        if "No space" in msg or "Could not allocate" in msg:
            raise ResourceExhaustedError(f"the box's files do not fit a {size_gb:g} GB VM disk: {msg}")
        raise StorageError(f"mke2fs failed building the VM disk: {msg}")


__all__ = ["ExportRequest", "export", "import_box", "owner_token"]
