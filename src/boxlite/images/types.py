"""Plain data types shared by the images package (the public contract)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ParseError


@dataclass(frozen=True)
class ImageConfig:
    """The runtime-relevant part of an OCI image config."""

    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] = field(default_factory=list)
    working_dir: str | None = None
    user: str | None = None
    exposed_ports: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ImageConfig:
        """Build from a parsed image config document (the ``config`` key is read).

        The document comes from the image: a field of the wrong type is a ParseError.
        """
        c = doc.get("config") or {}
        if not isinstance(c, dict):
            raise ParseError("image config: 'config' is not an object")

        def typed(key: str, kind: type) -> Any:
            value = c.get(key)
            if value is not None and not isinstance(value, kind):
                raise ParseError(f"image config: {key} must be a {kind.__name__}")
            return value

        def strlist(key: str) -> list[str] | None:
            value = typed(key, list)
            if value is not None and not all(isinstance(x, (str, int, float)) for x in value):
                raise ParseError(f"image config: {key} must be a list of strings")
            return [str(x) for x in value] if value is not None else None

        ports = typed("ExposedPorts", dict) or {}
        labels = typed("Labels", dict) or {}
        if not all(isinstance(v, (str, int, float, bool)) for v in labels.values()):
            raise ParseError("image config: Labels values must be strings")
        return cls(
            entrypoint=strlist("Entrypoint"),
            cmd=strlist("Cmd"),
            env=strlist("Env") or [],
            working_dir=typed("WorkingDir", str) or None,
            user=typed("User", str) or None,
            exposed_ports=sorted(str(k) for k in ports),
            labels={str(k): str(v) for k, v in labels.items()},
        )


LIVE_ROOTFS_PREFIX = "rootfs:dir-"
"""Image ids of rootfs directories mounted in place (``images.rootfs.live_root``)."""


def is_live_rootfs(image_id: str) -> bool:
    """Is the box's layer the user's own directory (not a copy in the store)?"""
    return image_id.startswith(LIVE_ROOTFS_PREFIX)


@dataclass(frozen=True)
class PreparedImage:
    """An image ready for an engine: unpacked layer dirs (bottom first) and its config."""

    layers: tuple[Path, ...]
    config: ImageConfig
    image_id: str
    reference: str | None


@dataclass(frozen=True)
class ImageInfo:
    """One stored image reference."""

    reference: str
    digest: str
    image_id: str
    size: int
    created: str | None

    # BoxLite's names for the same facts (properties: the stored/REST form stays the fields above)
    @property
    def id(self) -> str:
        return self.image_id

    @property
    def config_digest(self) -> str:
        return self.image_id

    @property
    def repository(self) -> str:
        return self.reference.split("@", 1)[0].rpartition(":")[0] if self._tagged() else self.reference.split("@")[0]

    @property
    def tag(self) -> str:
        return self.reference.split("@", 1)[0].rpartition(":")[2] if self._tagged() else ""

    def _tagged(self) -> bool:
        name = self.reference.split("@", 1)[0]
        return ":" in name.rpartition("/")[2]

    @property
    def size_bytes(self) -> int | None:
        return self.size

    @property
    def cached_at(self) -> str | None:
        return self.created


@dataclass(frozen=True)
class PullProgress:
    """Download progress of one layer blob."""

    layer: str
    downloaded: int
    total: int
    done: bool
