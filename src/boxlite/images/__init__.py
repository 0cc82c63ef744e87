"""OCI images: references, registry client, content store, safe unpacking, local imports."""

from .manager import ImageManager
from .reference import Reference, parse_reference
from .registry_config import ImageRegistry, load_registries_from_config
from .types import ImageConfig, ImageInfo, PreparedImage, PullProgress

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
