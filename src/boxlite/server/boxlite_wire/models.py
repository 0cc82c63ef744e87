"""Request bodies of BoxLite's REST API and the JSON it expects back, mapped onto our types."""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ...api.advanced import ContainerCapabilities
from ...api.options import DEFAULT_MEMORY_MIB, AdvancedBoxOptions, BoxOptions, NetworkSpec, SecurityOptions
from ...api.results import BoxInfo

DEFAULT_IMAGE = "alpine:latest"
"""BoxLite's default when a create request names neither ``image`` nor ``rootfs_path``."""
BOX_STATUSES = frozenset({"configured", "running", "stopping", "stopped", "paused", "failed", "unknown"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WireCapabilities(_Strict):
    add: list[str] = Field(default_factory=list, max_length=64)
    drop: list[str] = Field(default_factory=list, max_length=64)


class WireAdvanced(_Strict):
    capabilities: WireCapabilities | None = None


class WireVolume(BaseModel):
    host_path: str = Field(min_length=1)
    guest_path: str = Field(min_length=1)
    read_only: bool = False


class WireNetwork(_Strict):
    mode: Literal["enabled", "disabled"]
    allow_net: list[str] = Field(default_factory=list, max_length=1024)


class WireSecret(BaseModel):
    name: str = Field(min_length=1)
    value: str
    hosts: list[str] = Field(default_factory=list)
    placeholder: str | None = None


class WireCreateBox(_Strict):
    """``CreateBoxRequest``: flat options (ours nest them under ``options``)."""

    advanced: WireAdvanced | None = None
    security: Literal["development", "standard", "maximum"] | None = None
    name: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9][a-zA-Z0-9._-]*$")
    image: str | None = Field(default=None, min_length=1)
    rootfs_path: str | None = Field(default=None, min_length=1)
    cpus: int | None = Field(default=None, ge=1, le=32)
    memory_mib: int | None = Field(default=None, ge=128)
    disk_size_gb: int | None = Field(default=None, ge=1)
    working_dir: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    user: str | None = None
    volumes: list[WireVolume] = Field(default_factory=list)
    network: WireNetwork | None = None
    secrets: list[WireSecret] = Field(default_factory=list)
    detach: bool = False
    auto_pause: int | None = Field(default=None, ge=0)
    auto_delete: int = Field(default=0, ge=0)
    auto_resume: bool | None = None

    def to_options(self) -> BoxOptions:
        """Our options; a ``security`` preset becomes the ``SecurityOptions`` preset of that name
        (what it adds is honoured; it never removes our confinement)."""
        image = self.image if self.image or self.rootfs_path else DEFAULT_IMAGE
        options = BoxOptions(
            image=image, rootfs_path=self.rootfs_path, cpus=self.cpus, memory_mib=self.memory_mib,
            disk_size_gb=self.disk_size_gb, working_dir=self.working_dir, env=dict(self.env),
            entrypoint=self.entrypoint, cmd=self.cmd, user=self.user,
            volumes=[v.model_dump() for v in self.volumes],
            network=NetworkSpec(self.network.mode, list(self.network.allow_net)) if self.network else None,
            secrets=[s.model_dump(exclude_none=True) for s in self.secrets], detach=self.detach,
            auto_pause=self.auto_pause, auto_delete=self.auto_delete, auto_resume=self.auto_resume,
        )  # fmt: skip
        caps = self.advanced.capabilities if self.advanced else None
        security = getattr(SecurityOptions, self.security)() if self.security else None
        if caps is not None or security is not None:
            options.advanced = AdvancedBoxOptions(
                security=security,
                capabilities=None if caps is None else ContainerCapabilities(list(caps.add), list(caps.drop)),
            )
        return options


class WireStopBox(BaseModel):
    timeout_seconds: float | None = Field(default=None, ge=0)


class WireExecRequest(BaseModel):
    """``ExecRequest``: one command; its output is read over the attach WebSocket."""

    command: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] | None = None
    timeout_seconds: float | None = Field(default=None, ge=0.1)
    working_dir: str | None = None
    tty: bool = False


class WireSignal(BaseModel):
    signal: int


class WireResize(BaseModel):
    cols: int = Field(ge=1, le=65535)
    rows: int = Field(ge=1, le=65535)


class WirePull(BaseModel):
    reference: str = Field(min_length=1)


def box_json(info: BoxInfo) -> dict[str, Any]:
    """``Box``: our ``BoxInfo`` in BoxLite's shape (an ended box is ``stopped``; cpus are whole)."""
    state = info.state
    status = "stopped" if state.status == "exited" else state.status
    cpus = round(info.cpus) if info.cpus else (os.cpu_count() or 1)
    updated = info.started_at if state.running else (state.finished_at or info.started_at)
    return {
        "box_id": info.id,
        "name": info.name,
        "status": status if status in BOX_STATUSES else "unknown",
        "created_at": info.created_at,
        "updated_at": updated or info.created_at,
        "pid": state.pid if state.running else None,
        "image": info.image,
        "cpus": max(1, min(32, cpus)),
        "memory_mib": info.memory_mib or DEFAULT_MEMORY_MIB,
        "labels": {},
        "auto_pause": info.auto_pause,
        "auto_delete": info.auto_delete,
        "auto_resume": info.auto_resume,
    }


def image_json(info: Any) -> dict[str, Any]:
    """``ImageInfo``: reference split into repository and tag; ``id`` is the manifest digest."""
    data = asdict(info)
    reference = str(data["reference"])
    repository, tag = reference, "latest"
    if "@" in reference:
        repository, tag = reference.split("@", 1)
    elif ":" in reference.rsplit("/", 1)[-1]:
        repository, tag = reference.rsplit(":", 1)
    return {
        "reference": reference,
        "repository": repository,
        "tag": tag,
        "id": data.get("digest") or data.get("image_id") or "",
        "cached_at": data.get("created") or "1970-01-01T00:00:00Z",
        "size_bytes": data.get("size"),
    }
