"""OCI images: references, registry client, content store, safe unpacking, local imports.

Public names are imported lazily (PEP 562): ``from boxlite.images import ImageInfo`` loads the
types only, not the manager with its store, catalog and unpacker (a ``--rootfs`` run of the CLI
needs none of the pull machinery)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .manager import ImageManager
    from .reference import Reference, parse_reference
    from .registry_config import ImageRegistry, load_registries_from_config
    from .types import ImageConfig, ImageInfo, PreparedImage, PullProgress

_EXPORTS = {
    "ImageManager": "manager",
    "Reference": "reference",
    "parse_reference": "reference",
    "ImageRegistry": "registry_config",
    "load_registries_from_config": "registry_config",
    "ImageConfig": "types",
    "ImageInfo": "types",
    "PreparedImage": "types",
    "PullProgress": "types",
}

__all__ = [
    "ImageConfig",
    "ImageInfo",
    "ImageManager",
    "ImageRegistry",
    "PreparedImage",
    "PullProgress",
    "Reference",
    "load_registries_from_config",
    "parse_reference",
]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
