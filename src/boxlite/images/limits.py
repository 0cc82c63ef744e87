"""Limits on what an image may cost the host: unpacked bytes, entries, document sizes, pull time.

Images and registries are untrusted: an 8 MB tar bomb or a sparse layer must not become GiBs
on the host disk, a 300 MiB "config" must not be read into memory, and a registry sending one
byte per second must not hold a pull forever. Every limit has a default, an environment
variable (read when an :class:`ImageManager` is created) and an attribute on
``ImageManager.limits``; ``0`` disables a limit.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from ..errors import ConfigError, ImageTooLargeError

if TYPE_CHECKING:
    from .manifest import Manifest

GiB = 1 << 30
MiB = 1 << 20
TAR_BLOCK = 512

# field name -> environment variable
ENV = {
    "max_layer_bytes": "BOXLITE_IMAGE_MAX_LAYER_BYTES",
    "max_image_bytes": "BOXLITE_IMAGE_MAX_IMAGE_BYTES",
    "max_ratio": "BOXLITE_IMAGE_MAX_RATIO",
    "ratio_floor": "BOXLITE_IMAGE_RATIO_FLOOR_BYTES",
    "max_layer_entries": "BOXLITE_IMAGE_MAX_LAYER_ENTRIES",
    "max_image_entries": "BOXLITE_IMAGE_MAX_IMAGE_ENTRIES",
    "max_layers": "BOXLITE_IMAGE_MAX_LAYERS",
    "max_document": "BOXLITE_IMAGE_MAX_DOCUMENT_BYTES",
    "pull_timeout": "BOXLITE_PULL_TIMEOUT",
    "min_speed": "BOXLITE_PULL_MIN_SPEED",
    "speed_window": "BOXLITE_PULL_SPEED_WINDOW",
}


@dataclass
class ImageLimits:
    """Caps on image expansion and registry transfers (``0`` = no limit)."""

    max_layer_bytes: int = 16 * GiB  # unpacked (logical: sparse files count at full size)
    max_image_bytes: int = 32 * GiB  # unpacked, all layers of one image
    max_ratio: float = 100.0  # unpacked bytes per compressed byte of a layer...
    ratio_floor: int = 64 * MiB  # ...enforced once a layer unpacks to more than this
    max_layer_entries: int = 1_000_000
    max_image_entries: int = 2_000_000
    max_layers: int = 128
    max_document: int = 4 * MiB  # manifest, index, image config, token answer
    pull_timeout: float = 3600.0  # seconds for one whole pull (manifests and every blob)
    min_speed: int = 1024  # bytes/s a registry must sustain over each window...
    speed_window: float = 30.0  # ...of this many seconds

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ImageLimits:
        """Defaults overridden by the ``BOXLITE_IMAGE_*``/``BOXLITE_PULL_*`` variables."""
        env = os.environ if env is None else env
        out = cls()
        for f in fields(cls):
            raw = env.get(ENV[f.name])
            if raw is None or raw.strip() == "":
                continue
            try:
                value: float = float(raw) if f.type == "float" else int(raw, 0)
            except ValueError:
                raise ConfigError(f"{ENV[f.name]}={raw!r} is not a number") from None
            if value < 0:
                raise ConfigError(f"{ENV[f.name]} must not be negative")
            setattr(out, f.name, value)
        return out

    def document(self, what: str, size: int) -> None:
        """Refuse a manifest/index/config of ``size`` bytes before it is read."""
        if self.max_document and size > self.max_document:
            raise ImageTooLargeError(
                f"{what} is {size} bytes, more than the limit of {self.max_document} ({ENV['max_document']})"
            )

    def check_manifest(self, manifest: Manifest, what: str = "image") -> None:
        """Refuse, before any download, an image whose manifest already says it is too big."""
        if self.max_layers and len(manifest.layers) > self.max_layers:
            raise ImageTooLargeError(
                f"{what} has {len(manifest.layers)} layers, more than {self.max_layers} ({ENV['max_layers']})"
            )
        self.document(f"{what}: image config", manifest.config.size)
        for d in manifest.layers:
            if self.max_layer_bytes and d.size > self.max_layer_bytes:
                raise ImageTooLargeError(
                    f"{what}: layer {d.digest} is {d.size} bytes, more than "
                    f"{self.max_layer_bytes} ({ENV['max_layer_bytes']})"
                )
        total = sum(d.size for d in manifest.layers)
        if self.max_image_bytes and total > self.max_image_bytes:
            raise ImageTooLargeError(
                f"{what}: layers are {total} bytes, more than {self.max_image_bytes} ({ENV['max_image_bytes']})"
            )


class ImageBudget:
    """Unpacked bytes and entries of one image, shared by the threads unpacking its layers.

    Once exceeded it stays exceeded, so the other layers' extractions stop at their next entry.
    """

    def __init__(self, limits: ImageLimits, name: str = "image") -> None:
        self.limits = limits
        self.name = name
        self.bytes = 0
        self.entries = 0
        self.exceeded: str | None = None
        self._lock = threading.Lock()

    def charge(self, nbytes: int, entries: int = 0) -> None:
        with self._lock:
            if self.exceeded is None:
                self.bytes += nbytes
                self.entries += entries
                lim = self.limits
                if lim.max_image_bytes and self.bytes > lim.max_image_bytes:
                    self.exceeded = (
                        f"{self.name} unpacks to more than {lim.max_image_bytes} bytes ({ENV['max_image_bytes']})"
                    )
                elif lim.max_image_entries and self.entries > lim.max_image_entries:
                    self.exceeded = (
                        f"{self.name} has more than {lim.max_image_entries} entries ({ENV['max_image_entries']})"
                    )
            if self.exceeded is not None:
                raise ImageTooLargeError(self.exceeded)


class LayerMeter:
    """Counts what one layer unpacks to and refuses it past the per-layer limits.

    Sizes come from tar headers, so a member is refused before its data is written.
    """

    def __init__(
        self, limits: ImageLimits, compressed: int, name: str = "layer", budget: ImageBudget | None = None
    ) -> None:
        self.limits = limits
        self.compressed = compressed
        self.name = name
        self.budget = budget
        self.bytes = 0
        self.entries = 0

    def charge(self, size: int, entries: int = 1) -> None:
        """Account one tar member whose content is ``size`` (logical) bytes (with ``entries=0``:
        ``size`` bytes of trailing stream data)."""
        nbytes = TAR_BLOCK + -(-max(size, 0) // TAR_BLOCK) * TAR_BLOCK if entries else size
        self.bytes += nbytes
        self.entries += entries
        lim = self.limits
        if lim.max_layer_entries and self.entries > lim.max_layer_entries:
            raise ImageTooLargeError(
                f"{self.name} has more than {lim.max_layer_entries} entries ({ENV['max_layer_entries']})"
            )
        if lim.max_layer_bytes and self.bytes > lim.max_layer_bytes:
            raise ImageTooLargeError(
                f"{self.name} unpacks to more than {lim.max_layer_bytes} bytes ({ENV['max_layer_bytes']})"
            )
        if lim.max_ratio and self.bytes > max(lim.ratio_floor, lim.max_ratio * self.compressed):
            raise ImageTooLargeError(
                f"{self.name} expands more than {lim.max_ratio:g}x its {self.compressed} compressed bytes "
                f"({self.bytes} bytes so far; {ENV['max_ratio']}, {ENV['ratio_floor']})"
            )
        if self.budget is not None:
            self.budget.charge(nbytes, entries)
