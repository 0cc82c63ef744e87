"""``runtime.volumes``: BoxLite's named volumes (create, list, get, remove), on this machine
(``<home>/volumes``, runtime/volumes.py) or on a ``boxlite serve`` server. A box mounts one by id
in ``BoxOptions.volumes``: ``"vol-…:/data[:ro]"`` or ``{"volume_id": ..., "mount_path": ...}``."""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..runtime.volumes import VolumeInfo

if TYPE_CHECKING:
    from ..backends.base import Backend


class VolumeHandle:
    """The named volumes of one runtime (``Boxlite.volumes``)."""

    def __init__(self, runtime: object = None) -> None:
        backend = getattr(runtime, "_backend", None)
        if backend is None:  # BoxLite's handle is not constructible either
            raise ConfigError("a VolumeHandle comes from a runtime: use runtime.volumes")
        self._backend: Backend = backend

    async def create(self) -> VolumeInfo:
        """A new empty volume; its id is assigned here (``vol-`` + 16 hex digits)."""
        return await self._backend.volume_create()

    async def list(self) -> builtins.list[VolumeInfo]:
        return await self._backend.volume_list()

    async def get(self, id: str) -> VolumeInfo:
        """The volume's info; NotFoundError if there is none, ConfigError for a malformed id."""
        return await self._backend.volume_get(id)

    async def remove(self, id: str, force: bool = False) -> None:
        """Delete the volume and its data. A box still naming it: InvalidStateError (with ``force``,
        allowed while those boxes are stopped; they then fail to start). ``force``: a missing
        volume is success."""
        await self._backend.volume_remove(id, force)

    def __repr__(self) -> str:
        return "VolumeHandle()"


__all__ = ["VolumeHandle", "VolumeInfo"]
