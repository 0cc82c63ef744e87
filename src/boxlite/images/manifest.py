"""Manifest and image index documents, and platform selection for this host."""

from __future__ import annotations

import json
import os
import platform as _platform
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, ImageError, ParseError
from .reference import is_digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
_LAYER_PREFIXES = ("application/vnd.oci.image.layer.", "application/vnd.docker.image.rootfs.")
_FOREIGN = ("foreign", "nondistributable")


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor (media type, digest, size) plus optional platform."""

    media_type: str
    digest: str
    size: int
    platform: dict[str, Any] | None = None
    annotations: dict[str, str] | None = None

    @classmethod
    def from_json(cls, d: Any) -> Descriptor:
        if not isinstance(d, dict):
            raise ParseError("descriptor is not an object")
        digest, size = d.get("digest"), d.get("size")
        if not isinstance(digest, str) or not is_digest(digest):
            raise ParseError(f"unsupported or invalid digest {str(digest)[:100]!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ParseError(f"invalid size {str(size)[:100]!r} for {digest}")
        media_type = d.get("mediaType", "")
        if not isinstance(media_type, str):
            raise ParseError(f"invalid mediaType for {digest}")
        platform = d.get("platform")
        if platform is not None and not isinstance(platform, dict):
            raise ParseError(f"invalid platform for {digest}")
        annotations = d.get("annotations")
        if annotations is not None and not (
            isinstance(annotations, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in annotations.items())
        ):
            raise ParseError(f"invalid annotations for {digest}")
        return cls(media_type, digest, size, platform, annotations)


@dataclass(frozen=True)
class Manifest:
    """An image manifest: config + layer descriptors (bottom first)."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


def load_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as e:  # RecursionError: nested thousands of levels deep
        raise ParseError(f"{what} is not valid JSON: {type(e).__name__}: {str(e)[:200]}") from None
    if not isinstance(doc, dict):
        raise ParseError(f"{what} is not a JSON object")
    return doc


def media_type_of(doc: dict[str, Any], header_type: str | None = None) -> str:
    """Media type from the document, else the HTTP header, else guessed from its shape."""
    mt = doc.get("mediaType") or (header_type or "").split(";")[0].strip()
    if isinstance(mt, str) and (mt in MANIFEST_TYPES or mt in INDEX_TYPES):
        return mt
    if "manifests" in doc:
        return OCI_INDEX
    if "layers" in doc and "config" in doc:
        return OCI_MANIFEST
    if doc.get("schemaVersion") == 1:
        raise ImageError("docker schema 1 manifests are not supported")
    raise ParseError(f"unsupported manifest media type {str(mt)[:100]!r}")


def parse_manifest(doc: dict[str, Any]) -> Manifest:
    """Parse an OCI or Docker v2 schema 2 image manifest."""
    mt = media_type_of(doc)
    if mt not in MANIFEST_TYPES:
        raise ParseError(f"expected an image manifest, got {mt}")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise ParseError("manifest has no layers list")
    parsed = tuple(Descriptor.from_json(x) for x in layers)
    for layer in parsed:
        if not layer.media_type.startswith(_LAYER_PREFIXES):
            raise ImageError(f"unsupported layer media type {layer.media_type!r}")
        if any(f in layer.media_type for f in _FOREIGN):
            raise ImageError(f"foreign/non-distributable layers are not supported: {layer.digest}")
    return Manifest(mt, Descriptor.from_json(doc.get("config")), parsed)


def host_platform() -> tuple[str, str, str | None]:
    """(os, architecture, variant) of this host in OCI terms.

    ``BOXLITE_IMAGE_PLATFORM=os/arch[/variant]`` overrides the detection.
    """
    override = os.environ.get("BOXLITE_IMAGE_PLATFORM")
    if override:
        parts = override.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ConfigError(f"BOXLITE_IMAGE_PLATFORM={override!r}: expected os/arch[/variant]")
        return parts[0], parts[1], parts[2] if len(parts) > 2 else None
    machine = _platform.machine().lower()
    table: dict[str, tuple[str, str | None]] = {
        "x86_64": ("amd64", None),
        "amd64": ("amd64", None),
        "aarch64": ("arm64", "v8"),
        "arm64": ("arm64", "v8"),
        "armv7l": ("arm", "v7"),
        "armv6l": ("arm", "v6"),
        "i686": ("386", None),
        "i386": ("386", None),
        "ppc64le": ("ppc64le", None),
        "s390x": ("s390x", None),
        "riscv64": ("riscv64", None),
    }
    arch, variant = table.get(machine, (machine, None))
    return "linux", arch, variant


def select_platform(doc: dict[str, Any]) -> Descriptor:
    """Pick this host's manifest from an image index / manifest list."""
    want_os, want_arch, want_variant = host_platform()
    manifests = doc.get("manifests") or []
    if not isinstance(manifests, list):
        raise ParseError("image index: manifests is not a list")
    entries = [Descriptor.from_json(m) for m in manifests]
    candidates = []
    for d in entries:
        p = d.platform or {}
        if d.media_type and d.media_type not in MANIFEST_TYPES + INDEX_TYPES:
            continue
        if p.get("os") != want_os or p.get("architecture") != want_arch:
            continue
        variant = p.get("variant")
        if want_variant and variant and variant != want_variant:
            continue
        # exact variant match ranks first, then entries without a variant
        candidates.append((0 if variant == want_variant else 1, d))
    if not candidates:
        have = sorted(
            {
                "/".join(
                    str(x)
                    for x in (
                        (d.platform or {}).get("os"),
                        (d.platform or {}).get("architecture"),
                        (d.platform or {}).get("variant"),
                    )
                    if x
                )
                for d in entries
            }
        )
        want = "/".join(x for x in (want_os, want_arch, want_variant) if x)
        shown = ", ".join(have[:20]) + (f", ... ({len(have)} in all)" if len(have) > 20 else "")
        raise ImageError(f"image has no manifest for platform {want} (available: {shown or 'none'})")
    candidates.sort(key=lambda c: c[0])
    return candidates[0][1]
