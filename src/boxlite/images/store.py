"""On-disk image store: content-addressed blobs, unpacked layer dirs, SQLite ref index.

Layout under ``<home>/images/``::

    blobs/sha256/<hex>        verified blobs (manifests, configs, layers)
    layers-v2/<hex>/root      unpacked layer, keyed by layer blob digest; ownership as in the image
    layers-v2/<hex>/expanded.json  what the layer unpacked to (bytes, entries): per-image limits
    layers/<hex>[.u<base>]/   format 1 (before id-mapped mounts): ownership shifted by a uid base;
                              only boxes created then still use these, gc removes the rest
    locks/                    flock files (per blob / layer, and the store-wide gc lock)
    tmp/                      partial downloads and unpack work dirs
    index.db                  SQLite (WAL): reference -> manifest digest, image id, size

Layers are stored unshifted: the engines map ownership themselves (the namespace engine with
id-mapped mounts, the VM engine's disk holds image ids as they are). So a layer holds real
setuid-root files on the host disk: the ``images`` directory and every layer directory are 0700
root's, which no other host user (nor a host process running as a box's uid) may reach.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from ..errors import DigestMismatchError, ImageError
from ..sqlite_wal import connect
from .limits import ImageLimits
from .reference import is_digest
from .types import ImageInfo

DEFAULT_UID_BASE = 100000
LAYERS_DIR = "layers-v2"
"""Unshifted layers. A new directory rather than a format marker: format 1 layers (``layers/``)
hold shifted ownership and must never be used as unshifted, nor the other way round."""
LEGACY_LAYERS_DIR = "layers"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    reference TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    image_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    created TEXT,
    added REAL NOT NULL
);
"""


class Store:
    """Files and index of one home's images directory. Safe for concurrent processes."""

    def __init__(self, home: Path, limits: ImageLimits | None = None) -> None:
        self.root = Path(home) / "images"
        self.blobs = self.root / "blobs" / "sha256"
        self.layers = self.root / LAYERS_DIR
        self.legacy_layers = self.root / LEGACY_LAYERS_DIR
        self.locks = self.root / "locks"
        self.tmp = self.root / "tmp"
        self.limits = limits if limits is not None else ImageLimits.from_env()
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        for d in (self.blobs, self.layers, self.locks, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.layers, 0o700)
        self.db_path = self.root / "index.db"
        with self._db() as db:
            db.executescript(_SCHEMA)

    # -- SQLite index -----------------------------------------------------------------
    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = connect(self.db_path)
        try:
            yield db
        finally:
            db.close()

    def put_ref(self, info: ImageInfo) -> None:
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO images VALUES (?,?,?,?,?,?)",
                (info.reference, info.digest, info.image_id, info.size, info.created, time.time()),
            )

    def get_ref(self, reference: str) -> ImageInfo | None:
        with self._db() as db:
            row = db.execute(
                "SELECT reference,digest,image_id,size,created FROM images WHERE reference=?", (reference,)
            ).fetchone()
        return ImageInfo(*row) if row else None

    def find(self, key: str) -> list[ImageInfo]:
        """Rows whose reference, manifest digest or image id equal ``key``.

        A bare hex prefix of at least 12 characters also matches digests and ids.
        """
        with self._db() as db:
            rows = db.execute(
                "SELECT reference,digest,image_id,size,created FROM images WHERE reference=? OR digest=? OR image_id=?",
                (key, key, key),
            ).fetchall()
            if not rows and len(key) >= 12 and all(c in "0123456789abcdef" for c in key):
                like = f"sha256:{key}%"
                rows = db.execute(
                    "SELECT reference,digest,image_id,size,created FROM images WHERE digest LIKE ? OR image_id LIKE ?",
                    (like, like),
                ).fetchall()
        return [ImageInfo(*r) for r in rows]

    def all_refs(self) -> list[ImageInfo]:
        with self._db() as db:
            rows = db.execute(
                "SELECT reference,digest,image_id,size,created FROM images ORDER BY added DESC, reference"
            ).fetchall()
        return [ImageInfo(*r) for r in rows]

    def delete_refs(self, references: list[str]) -> None:
        with self._db() as db:
            db.executemany("DELETE FROM images WHERE reference=?", [(r,) for r in references])

    # -- blobs ------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        if not is_digest(digest):
            raise ImageError(f"unsupported digest {digest!r}")
        return self.blobs / digest.split(":", 1)[1]

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def read_blob(self, digest: str, what: str = "document") -> bytes:
        """A small blob (manifest, index, config) read whole, refused past ``limits.max_document``
        before anything is buffered."""
        try:
            with open(self.blob_path(digest), "rb") as f:
                self.limits.document(f"{what} {digest}", os.fstat(f.fileno()).st_size)
                return f.read()
        except FileNotFoundError:
            raise ImageError(f"blob {digest} is missing from the store") from None

    def lock_path(self, name: str) -> Path:
        return self.locks / f"{name}.lock"

    def blob_lock(self, digest: str) -> Path:
        return self.lock_path("blob-" + digest.split(":", 1)[1])

    def partial_path(self, digest: str) -> Path:
        """Stable partial-download file (used under the blob lock, so resumable)."""
        return self.tmp / f"{digest.split(':', 1)[1]}.partial"

    def commit_partial(self, digest: str, partial: Path) -> None:
        os.replace(partial, self.blob_path(digest))

    def put_bytes(self, data: bytes, expected: str | None = None) -> str:
        """Store ``data`` (verified against ``expected`` if given); return its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if expected and expected != digest:
            raise DigestMismatchError(f"content has digest {digest}, expected {expected}")
        if not self.has_blob(digest):
            fd, tmp = tempfile.mkstemp(dir=self.tmp, prefix="put-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self.blob_path(digest))
        return digest

    def put_stream(self, src: IO[bytes], expected: str | None = None, size: int | None = None) -> tuple[str, int]:
        """Copy a stream into the store while hashing; verify digest/size; (digest, size)."""
        hasher = hashlib.sha256()
        n = 0
        fd, tmp = tempfile.mkstemp(dir=self.tmp, prefix="put-")
        try:
            with os.fdopen(fd, "wb") as f:
                while chunk := src.read(1 << 20):
                    hasher.update(chunk)
                    f.write(chunk)
                    n += len(chunk)
            digest = "sha256:" + hasher.hexdigest()
            if (expected and digest != expected) or (size is not None and n != size):
                raise DigestMismatchError(f"blob {expected or digest}: got {n} bytes with digest {digest}")
            os.replace(tmp, self.blob_path(digest))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return digest, n

    # -- layers -----------------------------------------------------------------------
    def layer_dir(self, hex_id: str) -> Path:
        """A layer's directory (0700: it comes from ``mkdtemp``), whatever uid base boxes use."""
        return self.layers / hex_id

    def layer_root(self, hex_id: str) -> Path:
        return self.layer_dir(hex_id) / "root"

    def layer_usage(self, hex_id: str) -> tuple[int, int]:
        """(bytes, entries) a stored layer unpacked to; (0, 0) when not recorded (older stores)."""
        try:
            doc = json.loads((self.layer_dir(hex_id) / "expanded.json").read_bytes())
            return int(doc["bytes"]), int(doc["entries"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0, 0

    @staticmethod
    def is_shifted(layer_root: Path) -> bool:
        """Is ``layer_root`` (``images/layers/<key>/root``) a format 1 layer, its ownership
        shifted by the home's uid base? (By name: a box record may spell the home differently.)"""
        store = Path(layer_root).parent.parent
        return store.name == LEGACY_LAYERS_DIR and store.parent.name == "images"

    def gc_lock(self) -> Path:
        """Pulls/unpacks hold this shared; gc holds it exclusively."""
        return self.lock_path("gc")
