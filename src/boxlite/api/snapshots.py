"""``box.snapshot``: named disk snapshots of one box (BoxLite's ``SnapshotHandle``).

Snapshots are copy-on-write: creating one freezes the box's writable layer and puts an empty
one on top (see ``runtime.snapshots``), so it costs the same whatever the box wrote. Restoring
needs a stopped box (``InvalidStateError`` otherwise, the box untouched).
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .options import SnapshotOptions
from .results import SnapshotInfo

if TYPE_CHECKING:
    from .box import Box


class SnapshotHandle:
    """The snapshots of one box."""

    def __init__(self, box: Box) -> None:
        self._box = box

    async def create(self, name: str | None = None, options: SnapshotOptions | None = None) -> SnapshotInfo:
        """Snapshot the box's disk as it is now under ``name`` (unique per box; BoxLite passes it
        by keyword, ``create("s1")`` works too). A running box is frozen while its writable layer
        is copied."""
        if name is None:
            raise ConfigError("snapshot.create needs a name")
        return await self._box._backend.snapshot_create(self._box.id, name)

    async def list(self) -> builtins.list[SnapshotInfo]:
        return await self._box._backend.snapshot_list(self._box.id)

    async def get(self, name: str) -> SnapshotInfo | None:
        return await self._box._backend.snapshot_get(self._box.id, name)

    async def remove(self, name: str) -> None:
        """Forget the snapshot; layers nothing else uses are deleted."""
        await self._box._backend.snapshot_remove(self._box.id, name)

    async def restore(self, name: str) -> None:
        """The box's disk becomes the snapshot's; what was written since is discarded."""
        await self._box._backend.snapshot_restore(self._box.id, name)

    def __repr__(self) -> str:
        return f"SnapshotHandle(box={self._box.id!r})"


__all__ = ["SnapshotHandle", "SnapshotInfo", "SnapshotOptions"]
