"""The chain of a box's writable layers, as snapshots leave it (read by engines and the runtime).

A box without snapshots has one writable layer: ``upper/`` (namespace engine) or
``vm/disk.ext4`` (VM engine). Taking a snapshot *freezes* that layer: it is never written again
and a new, empty writable layer goes on top of it (an overlayfs lower dir for the namespace
engine, a qcow2 overlay whose backing file it is for the VM engine). This host filesystem (ext4)
has no reflinks, so layering is what makes a snapshot cost the same whatever the box wrote.

Everything about the chain is in one file, ``snap/state.json``, replaced atomically (write +
rename): a crash leaves the old chain or the new one, never a mix; layers no state names are
garbage any later operation deletes. Stdlib only (engines sit below the runtime).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATE_VERSION = 1
LEGACY_NS = "upper"  # layer id of a namespace box's original writable dir (<box>/upper)
LEGACY_VM = "disk"  # layer id of a VM box's original raw disk (<box>/vm/disk.ext4)
LAYER_ID = re.compile(r"^(upper|disk|[0-9a-f]{16})$")
MAX_DEPTH = 32
"""Frozen layers under a box's writable layer (overlayfs stacks these on the image's layers)."""


def snap_dir(box_dir: Path) -> Path:
    return box_dir / "snap"


def state_path(box_dir: Path) -> Path:
    return snap_dir(box_dir) / "state.json"


def layers_dir(box_dir: Path) -> Path:
    return snap_dir(box_dir) / "layers"


def layer_path(box_dir: Path, layer_id: str, engine: str) -> Path:
    """Where layer ``layer_id`` of the box lives (a directory, or a disk image file)."""
    if not LAYER_ID.match(layer_id):
        raise ValueError(f"invalid layer id {layer_id!r}")
    if layer_id == LEGACY_NS:
        return box_dir / "upper"
    if layer_id == LEGACY_VM:
        return box_dir / "vm" / "disk.ext4"
    suffix = ".qcow2" if engine == "vm" else ""
    return layers_dir(box_dir) / f"{layer_id}{suffix}"


def layer_format(layer_id: str) -> str:
    """Disk image format of a VM layer (the original disk is raw, every later one qcow2)."""
    return "raw" if layer_id == LEGACY_VM else "qcow2"


@dataclass
class ChainState:
    """``snap/state.json``: the writable layer (``top``), the frozen layer under it (``head``),
    each frozen layer's parent, and the named snapshots (each names a frozen layer)."""

    top: str
    head: str | None = None
    parents: dict[str, str | None] = field(default_factory=dict)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    top_mark: list[int] | None = None
    """(size, mtime ns) of a VM top right after it was created: unchanged means still empty."""

    def ancestry(self, layer: str | None) -> list[str]:
        """``layer`` and the layers under it, top first."""
        out: list[str] = []
        while layer is not None:
            if layer in out or len(out) > MAX_DEPTH + 1:
                raise ValueError("layer chain loops")
            out.append(layer)
            layer = self.parents.get(layer)
        return out

    def referenced(self) -> set[str]:
        refs = {self.top, *self.ancestry(self.head)}
        for snap in self.snapshots:
            refs.update(self.ancestry(snap.get("layer")))
        return refs

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "top": self.top,
            "head": self.head,
            "parents": self.parents,
            "snapshots": self.snapshots,
            "top_mark": self.top_mark,
        }

    @classmethod
    def from_json(cls, data: Any) -> ChainState:
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError("unknown snapshot state format")
        parents = data.get("parents") or {}
        ids = [data["top"], data.get("head"), *parents, *parents.values()]
        ids += [s.get("layer") for s in data.get("snapshots") or []]
        for i in ids:
            if i is not None and (not isinstance(i, str) or not LAYER_ID.match(i)):
                raise ValueError(f"invalid layer id {i!r}")
        return cls(
            data["top"], data.get("head"), dict(parents), list(data.get("snapshots") or []), data.get("top_mark")
        )


def read_state(box_dir: Path) -> ChainState | None:
    """The box's chain state, or None for a box that never had a snapshot."""
    try:
        text = state_path(box_dir).read_text()
    except FileNotFoundError:
        return None
    return ChainState.from_json(json.loads(text))


def write_state(box_dir: Path, state: ChainState) -> None:
    """Replace the state atomically (the commit point of every snapshot operation)."""
    path = state_path(box_dir)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    tmp = path.with_name(f".state.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(state.to_json(), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


@dataclass(frozen=True)
class Chain:
    """What an engine mounts: the writable layer and the frozen ones under it (bottom first)."""

    top: Path
    lowers: tuple[Path, ...]
    top_format: str  # VM: "raw" | "qcow2"; namespace: "dir"


def chain(box_dir: Path, engine: str) -> Chain:
    """The box's current layers (``upper``/``vm/disk.ext4`` alone without snapshots)."""
    state = read_state(box_dir)
    legacy = LEGACY_VM if engine == "vm" else LEGACY_NS
    if state is None:
        return Chain(layer_path(box_dir, legacy, engine), (), "raw" if engine == "vm" else "dir")
    lowers = tuple(layer_path(box_dir, i, engine) for i in reversed(state.ancestry(state.head)))
    fmt = layer_format(state.top) if engine == "vm" else "dir"
    return Chain(layer_path(box_dir, state.top, engine), lowers, fmt)


def virtual_size(path: Path, fmt: str) -> int:
    """The size a VM sees of disk image ``path`` (a qcow2 header holds it at offset 24)."""
    if fmt != "qcow2":
        return path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(32)
    if len(header) < 32 or header[:4] != b"QFI\xfb":
        raise ValueError(f"{path} is not a qcow2 image")
    return int.from_bytes(header[24:32], "big")
