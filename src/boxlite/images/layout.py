"""Importing local images: OCI image layouts (dir or tar) and ``docker save`` tarballs."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path
from typing import IO, Any, Protocol

from ..errors import ImageError, ImageTooLargeError, ParseError
from .manifest import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    Descriptor,
    load_json,
    media_type_of,
    parse_manifest,
    select_platform,
)
from .reference import parse_reference
from .store import Store
from .tarheaders import BoundedTarInfo

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


class Source(Protocol):
    """Read access to files of a layout directory or an archive."""

    name: str

    def exists(self, rel: str) -> bool: ...
    def open(self, rel: str) -> IO[bytes]: ...


class DirSource:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.resolve().name

    def _p(self, rel: str) -> Path:
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise ImageError(f"path {rel!r} escapes the layout")
        return self.path.joinpath(*parts)

    def exists(self, rel: str) -> bool:
        return self._p(rel).is_file()

    def open(self, rel: str) -> IO[bytes]:
        try:
            return self._p(rel).open("rb")
        except OSError as e:
            raise ImageError(f"{self.path}: cannot read {rel}: {e}") from e


class TarSource:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = re.sub(r"(\.tar)?(\.gz|\.tgz|\.zst)?$", "", path.name)
        try:
            # bounded extended headers: an archive from elsewhere is as untrusted as a registry
            self.tf = tarfile.open(path, "r:*", tarinfo=BoundedTarInfo)  # noqa: SIM115 - closed by close()
            self.members = {
                m.name[2:] if m.name.startswith("./") else m.name: m
                for m in self.tf.getmembers()
                if m.isreg() or m.islnk()
            }
        except (tarfile.TarError, OSError, ValueError, EOFError, RecursionError) as e:
            raise ImageError(f"{path}: not a readable tar archive: {e}") from e

    def close(self) -> None:
        self.tf.close()

    def exists(self, rel: str) -> bool:
        return rel in self.members

    def open(self, rel: str) -> IO[bytes]:
        m = self.members.get(rel)
        f = self.tf.extractfile(m) if m is not None else None
        if f is None:
            raise ImageError(f"{self.path}: archive has no file {rel}")
        return f


def _blob_rel(digest: str) -> str:
    alg, _, hexd = digest.partition(":")
    return f"blobs/{alg}/{hexd}"


def _read_small(store: Store, src: Source, rel: str) -> bytes:
    """A JSON document of the layout, read whole but never past ``limits.max_document``."""
    limit = store.limits.max_document
    with src.open(rel) as f:
        data = f.read(limit + 1) if limit else f.read()
    if limit and len(data) > limit:
        raise ImageTooLargeError(f"{rel} in {src.name} is larger than {limit} bytes")
    return data


def _copy_blob(store: Store, src: Source, desc: Descriptor) -> None:
    if store.has_blob(desc.digest):
        return
    with src.open(_blob_rel(desc.digest)) as f:
        store.put_stream(f, desc.digest, desc.size)


def _read_json(store: Store, src: Source, rel: str) -> Any:
    data = _read_small(store, src, rel)
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise ParseError(f"{rel} in {src.name} is not valid JSON") from None


def default_name(src: Source) -> str:
    """``localhost/<name>`` for images without a name of their own."""
    name = re.sub(r"[^a-z0-9._-]+", "-", src.name.lower()).strip("._-") or "image"
    return f"localhost/{name}"


def _ref_for(annotations: dict[str, str] | None, fallback: str) -> str:
    ann = annotations or {}
    name = ann.get(CONTAINERD_NAME) or ann.get(REF_NAME)
    if not name:
        return f"{fallback}:latest"
    if "/" in name or (":" in name and not re.fullmatch(r"[\w][\w.-]*", name)):
        try:
            return str(parse_reference(name))
        except ParseError:
            pass
    if re.fullmatch(r"[\w][\w.-]{0,127}", name):
        return f"{fallback}:{name}"
    raise ParseError(f"invalid image name {name!r} in layout")


def import_oci_layout(store: Store, src: Source) -> list[tuple[str, str]]:
    """Copy every image of an OCI layout into the store: [(reference, manifest digest)]."""
    index = _read_json(store, src, "index.json")
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise ParseError(f"{src.name}: index.json has no manifests list")
    fallback = default_name(src)
    out: list[tuple[str, str]] = []
    for raw in index["manifests"]:
        desc = Descriptor.from_json(raw)
        if desc.platform and desc.media_type in MANIFEST_TYPES:
            try:  # a multi-platform layout index: keep only this host's entry
                select_platform({"manifests": [raw]})
            except ImageError:
                continue
        digest = _import_manifest(store, src, desc)
        out.append((_ref_for(desc.annotations, fallback), digest))
    if not out:
        raise ImageError(f"{src.name}: no image for this platform in the layout")
    return out


def _import_manifest(store: Store, src: Source, desc: Descriptor, depth: int = 0) -> str:
    store.limits.document(f"manifest {desc.digest}", desc.size)
    body = _read_small(store, src, _blob_rel(desc.digest))
    store_digest = store.put_bytes(body, desc.digest)
    doc = load_json(body, "manifest")
    mt = media_type_of(doc, desc.media_type)
    if mt in INDEX_TYPES:
        if depth > 2:
            raise ImageError("image index nesting is too deep")
        return _import_manifest(store, src, select_platform(doc), depth + 1)
    manifest = parse_manifest(doc)
    store.limits.check_manifest(manifest, f"{src.name} {desc.digest}")
    for d in (manifest.config, *manifest.layers):
        _copy_blob(store, src, d)
    return store_digest


def import_docker_archive(store: Store, src: Source) -> list[tuple[str, str]]:
    """Import a ``docker save`` archive (``manifest.json`` with Config/Layers/RepoTags)."""
    entries = _read_json(store, src, "manifest.json")
    if not isinstance(entries, list):
        raise ParseError("manifest.json of a docker archive must be a list")
    out: list[tuple[str, str]] = []
    for entry in entries:
        if not isinstance(entry, dict) or "Config" not in entry or "Layers" not in entry:
            raise ParseError("docker archive manifest entry needs Config and Layers")
        if (
            not isinstance(entry["Config"], str)
            or not isinstance(entry["Layers"], list)
            or not all(isinstance(x, str) for x in entry["Layers"])
        ):
            raise ParseError("docker archive manifest entry: Config must be a path, Layers a list of paths")
        max_layers = store.limits.max_layers
        if max_layers and len(entry["Layers"]) > max_layers:
            raise ImageTooLargeError(f"docker archive image has {len(entry['Layers'])} layers, more than {max_layers}")
        config = _read_small(store, src, entry["Config"])
        config_digest, config_size = store.put_bytes(config), len(config)
        layers = []
        for rel in entry["Layers"]:
            with src.open(rel) as f:
                head = f.read(4)
            media = OCI_LAYER + ("+gzip" if head[:2] == b"\x1f\x8b" else "+zstd" if head == b"\x28\xb5\x2f\xfd" else "")
            with src.open(rel) as f:
                digest, size = store.put_stream(f)
            layers.append({"mediaType": media, "digest": digest, "size": size})
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
            "layers": layers,
        }
        body = json.dumps(manifest, separators=(",", ":")).encode()
        digest = store.put_bytes(body)
        tags = entry.get("RepoTags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ParseError("docker archive manifest entry: RepoTags must be a list of strings")
        refs = [str(parse_reference(t)) for t in tags] or [config_digest]
        out.extend((r, digest) for r in refs)
    return out


def is_oci_layout(path: Path) -> bool:
    """True for a directory holding an OCI image layout."""
    return (path / "oci-layout").is_file() and (path / "index.json").is_file()


def import_path(store: Store, path: Path) -> list[tuple[str, str]]:
    """Import a layout dir, an OCI archive or a docker archive; [(reference, digest)]."""
    if path.is_dir():
        if not is_oci_layout(path):
            raise ImageError(f"{path} is not an OCI image layout (no oci-layout/index.json)")
        return import_oci_layout(store, DirSource(path))
    if not path.is_file():
        raise ImageError(f"{path}: no such file or directory")
    tsrc = TarSource(path)
    try:
        if tsrc.exists("manifest.json"):
            return import_docker_archive(store, tsrc)
        if tsrc.exists("index.json"):
            return import_oci_layout(store, tsrc)
        raise ImageError(f"{path}: neither a docker archive nor an OCI archive")
    finally:
        tsrc.close()
