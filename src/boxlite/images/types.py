"""Plain data types shared by the images package (the public contract)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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
        """Build from a parsed image config document (the ``config`` key is read)."""
        c = doc.get("config") or {}

        def strlist(v: Any) -> list[str] | None:
            return [str(x) for x in v] if isinstance(v, list) else None

        return cls(
            entrypoint=strlist(c.get("Entrypoint")),
            cmd=strlist(c.get("Cmd")),
            env=strlist(c.get("Env")) or [],
            working_dir=c.get("WorkingDir") or None,
            user=c.get("User") or None,
            exposed_ports=sorted((c.get("ExposedPorts") or {}).keys()),
            labels={str(k): str(v) for k, v in (c.get("Labels") or {}).items()},
        )


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


@dataclass(frozen=True)
class PullProgress:
    """Download progress of one layer blob."""

    layer: str
    downloaded: int
    total: int
    done: bool
