"""Building a reproducible single-layer OCI image (an OCI layout directory) from a root filesystem.

The specialised boxes' images (:mod:`.recipes`) are trees made from Debian packages; this turns
such a tree into an image the store holds like a pulled one (``boxlite images`` lists it, boxes
run it by reference, its layer goes through the same safe unpacker with the same limits).

Reproducible: the same tree content always gives the same manifest digest. The layer tar lists
entries sorted by name, with numeric owners only (no user/group names from the host's
``/etc/passwd``), modification times clamped to :data:`EPOCH` (files the build wrote get EPOCH;
files from .deb packages keep their older times), whole seconds, no atime/ctime/xattr records;
zstd (one thread, fixed level: same bytes for the same tar); JSON documents with sorted keys.
Device nodes and sockets are left out (a box gets its own ``/dev``), as when a rootfs directory
is imported.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from ..errors import ImageError
from .manifest import OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, host_platform
from .reference import parse_reference

log = logging.getLogger("boxlite.images")

LOCAL_REGISTRY = "boxlite.local"
"""Registry part of the references of images built on this host (``boxlite.local/browser:latest``).
``.local`` is reserved for link-local names (RFC 6762), never a public registry's; the image
manager refuses to pull from it, so such a reference only ever names a local build."""

EPOCH = 1686355200
"""2023-06-10T00:00:00Z (Debian 12's release): the newest modification time in a built layer,
and the image's ``created`` time, so that a rebuild of the same inputs is byte-identical."""

ZSTD_LEVEL = 3
"""zstd rather than gzip: the image is built and then unpacked on first use of a box; gunzip of the
700 MB browser layer took ~10 s of CPU here, zstd a tenth of it (OCI image-spec 1.1 ``+zstd``)."""
REF_NAME = "org.opencontainers.image.ref.name"
_CHUNK = 1 << 20


class _HashingWriter:
    """Passes writes on while counting and hashing them (the digest of what went through)."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        self.out.write(data)
        return len(data)

    def flush(self) -> None:
        self.out.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()


def write_layer_tar(tree: Path, out: IO[bytes], epoch: int = EPOCH) -> None:
    """Write ``tree`` as a deterministic tar (see the module docstring) to ``out``."""
    import tarfile  # only when building: importing this module stays cheap

    tree = Path(os.path.realpath(tree))
    if not tree.is_dir():
        raise ImageError(f"{tree} is not a directory")
    links: dict[tuple[int, int], str] = {}
    skipped: list[str] = []
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8") as tf:  # type: ignore[call-overload]

        def entry(path: str, name: str) -> None:
            st = os.lstat(path)
            mode = st.st_mode
            info = tarfile.TarInfo(name)
            info.mode = stat.S_IMODE(mode)
            info.uid, info.gid = st.st_uid, st.st_gid
            info.uname = info.gname = ""
            info.mtime = min(int(st.st_mtime), epoch)
            if stat.S_ISDIR(mode):
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
                with os.scandir(path) as it:
                    children = sorted(e.name for e in it)
                for child in children:
                    entry(os.path.join(path, child), f"{name}/{child}")
                return
            if stat.S_ISREG(mode) and st.st_nlink > 1 and (st.st_dev, st.st_ino) in links:
                info.type = tarfile.LNKTYPE
                info.linkname = links[(st.st_dev, st.st_ino)]
                tf.addfile(info)
                return
            if stat.S_ISREG(mode):
                info.size = st.st_size
                with open(path, "rb") as f:
                    tf.addfile(info, f)
                if st.st_nlink > 1:
                    links[(st.st_dev, st.st_ino)] = name
            elif stat.S_ISLNK(mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(path)
                tf.addfile(info)
            elif stat.S_ISFIFO(mode):
                info.type = tarfile.FIFOTYPE
                tf.addfile(info)
            else:
                skipped.append(name)

        with os.scandir(tree) as it:
            top = sorted(e.name for e in it)
        for name in top:
            entry(os.path.join(tree, name), name)
    if skipped:
        log.warning("image of %s: left out %d device nodes/sockets (%s)", tree, len(skipped), ", ".join(skipped[:8]))


def clamp_times(tree: Path, epoch: int = EPOCH) -> None:
    """Give every entry of ``tree`` the modification time its layer will carry (whole seconds, at
    most ``epoch``), for a recipe step whose output depends on times (fontconfig's cache)."""
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in (*filenames, *dirnames, ""):
            path = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(path)
            want = min(int(st.st_mtime), epoch) * 10**9
            if st.st_mtime_ns != want:
                os.utime(path, ns=(want, want), follow_symlinks=False)


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).write_bytes(data)
    return digest, len(data)


def image_config(diff_id: str, labels: dict[str, str], epoch: int = EPOCH) -> dict[str, Any]:
    """The image config: shell by default, the usual PATH, ``created`` fixed at ``epoch``."""
    os_name, arch, variant = host_platform()
    doc: dict[str, Any] = {
        "architecture": arch,
        "os": os_name,
        "created": _iso(epoch),
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "Labels": dict(labels),
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    if variant:
        doc["variant"] = variant
    return doc


def _iso(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def write_oci_layout(
    tree: Path, dest: Path, references: list[str], labels: dict[str, str] | None = None, epoch: int = EPOCH
) -> str:
    """Write an OCI image layout of ``tree`` (one zstd layer) at the new directory ``dest``.

    ``references`` (full references, e.g. ``boxlite.local/browser:latest``) become index
    entries naming the one manifest. Returns the manifest digest. ``dest`` appears complete
    or not at all (built beside it, then renamed).
    """
    import zstandard

    for ref in references:
        parse_reference(ref)  # malformed: a ParseError before any work
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:
        blobs = work / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        layer_tmp = blobs / ".layer.partial"
        with open(layer_tmp, "wb") as raw:
            outer = _HashingWriter(raw)
            compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=0, write_checksum=True)
            with compressor.stream_writer(outer, closefd=False) as zst:  # type: ignore[arg-type]
                inner = _HashingWriter(zst)  # type: ignore[arg-type]
                write_layer_tar(tree, inner, epoch)  # type: ignore[arg-type]
        layer_digest, layer_size, diff_id = outer.digest, outer.size, inner.digest
        os.rename(layer_tmp, blobs / layer_digest.split(":", 1)[1])
        config_digest, config_size = _blob(work, _canonical(image_config(diff_id, labels or {}, epoch)))
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": OCI_LAYER + "+zstd", "digest": layer_digest, "size": layer_size}],
        }
        manifest_digest, manifest_size = _blob(work, _canonical(manifest))
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": manifest_digest,
                    "size": manifest_size,
                    "annotations": {REF_NAME: ref},
                }
                for ref in references
            ],
        }
        (work / "index.json").write_bytes(_canonical(index))
        (work / "oci-layout").write_bytes(_canonical({"imageLayoutVersion": "1.0.0"}))
        os.chmod(work, 0o755)
        os.rename(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest_digest


def layout_manifest_digest(layout: Path) -> str | None:
    """The manifest digest a layout written by :func:`write_oci_layout` names (None: unreadable)."""
    try:
        index = json.loads((Path(layout) / "index.json").read_bytes())
        digest = index["manifests"][0]["digest"]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    return digest if isinstance(digest, str) else None
