"""Reading stored images (manifest, config) and recording references in the index."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import ImageError, ParseError
from .manifest import Manifest, load_json, parse_manifest
from .store import Store
from .types import ImageConfig, ImageInfo


@dataclass(frozen=True)
class StoredImage:
    """A complete image in the store: manifest, parsed config and raw config document."""

    manifest_digest: str
    manifest: Manifest
    config_doc: dict[str, Any]

    @property
    def image_id(self) -> str:
        return self.manifest.config.digest

    @property
    def config(self) -> ImageConfig:
        return ImageConfig.from_json(self.config_doc)

    @property
    def diff_ids(self) -> list[str | None]:
        ids = (self.config_doc.get("rootfs") or {}).get("diff_ids") or []
        if not isinstance(ids, list) or len(ids) != len(self.manifest.layers):
            return [None] * len(self.manifest.layers)
        if not all(isinstance(x, str) for x in ids):
            raise ParseError("image config: rootfs.diff_ids must be a list of strings")
        return list(ids)


def read_image(store: Store, manifest_digest: str) -> StoredImage:
    """Load manifest + config of a stored image (raises ImageError if a blob is missing)."""
    manifest = parse_manifest(load_json(store.read_blob(manifest_digest, "manifest"), "manifest"))
    config_doc = load_json(store.read_blob(manifest.config.digest, "image config"), "image config")
    if "rootfs" in config_doc and not isinstance(config_doc["rootfs"], dict):
        raise ParseError("image config has an invalid rootfs section")
    return StoredImage(manifest_digest, manifest, config_doc)


def is_complete(store: Store, manifest_digest: str) -> bool:
    """True when the manifest, config and every layer blob are present."""
    if not store.has_blob(manifest_digest):
        return False
    try:
        manifest = parse_manifest(load_json(store.read_blob(manifest_digest, "manifest"), "manifest"))
    except (ImageError, ParseError):
        return False
    return all(store.has_blob(d.digest) for d in (manifest.config, *manifest.layers))


def record_image(store: Store, reference: str, manifest_digest: str) -> ImageInfo:
    """Point ``reference`` at a stored manifest; returns the index row."""
    img = read_image(store, manifest_digest)
    size = (
        store.blob_path(manifest_digest).stat().st_size
        + img.manifest.config.size
        + sum(d.size for d in img.manifest.layers)
    )
    created = img.config_doc.get("created")
    info = ImageInfo(reference, manifest_digest, img.image_id, size, str(created) if created else None)
    store.put_ref(info)
    return info
