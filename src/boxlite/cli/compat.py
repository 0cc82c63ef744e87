"""Small helpers between the CLI and the SDK (image commands, detaching)."""

from __future__ import annotations

from typing import Any

from ..api.box import Box
from ..api.results import BoxInfo, masked_env
from ..api.runtime import Boxlite
from ..errors import BoxliteError


def image_config(box: Box) -> dict[str, Any]:
    """The box image's config (entrypoint, cmd, env, working_dir, user)."""
    return dict(box.info().image_config)


async def image_command(rt: Boxlite, image: str) -> list[str]:
    """ENTRYPOINT + CMD of ``image`` (pulled if missing), before any box exists."""
    config = await rt.images.config(image)
    return [*(config.entrypoint or []), *(config.cmd or [])]


async def has_image(rt: Boxlite, image: str) -> bool:
    """Whether ``image`` resolves to a stored image (so creating a box will not pull)."""
    return await rt.images.get(image) is not None


def default_command(box: Box, entrypoint: list[str] | None, cmd: list[str]) -> list[str]:
    """Docker semantics: ENTRYPOINT + (CMD given on the command line, else the image's CMD)."""
    cfg = image_config(box)
    ep = entrypoint if entrypoint is not None else list(cfg.get("entrypoint") or [])
    args = cmd or ([] if entrypoint is not None else list(cfg.get("cmd") or []))
    return [*ep, *args]


async def start_detached(box: Box) -> None:
    """Start a box so that it outlives this process (also one created by a foreground ``run``).
    A server's or a cluster's boxes outlive the CLI anyway (and take ``detach`` at creation only)."""
    from .common import is_local

    if is_local(box._runtime):
        await box.start(detach=True)
    else:
        await box.start()


def box_details(rt: Boxlite, info: BoxInfo) -> dict[str, Any]:
    """What ``ls`` and ``inspect`` show beyond ``BoxInfo``: the main command, the environment
    (secret values masked), published ports, exit code, health. The command and the box's own
    environment come with ``BoxInfo`` (masked where the box lives); a local home adds ``secrets``."""
    published = info.network.published_ports if info.network is not None else None
    ports = [f"{p.host_ip}:{p.host_port}->{p.guest_port}/{p.protocol}" for p in published or []]
    details: dict[str, Any] = {
        "command": info.command,
        "env": info.env,
        "ports": ports,
        "exit_code": info.state.exit_code,
        "health": str(info.health_status.state),
    }
    try:
        core = rt._core
    except BoxliteError:  # --url / --ray: what the server reports only
        return details
    try:
        rec = core.record(info.id)
    except BoxliteError:
        return details
    config = rec.config
    details["command"] = core.main_command(rec) or None
    image_env = [tuple(item.partition("=")[::2]) for item in rec.image_config.env or ()]
    details["env"] = masked_env([*image_env, *config.env])  # type: ignore[list-item]
    details["secrets"] = [{"name": r.name, "hosts": list(r.hosts), "placeholder": r.placeholder}
                          for r in config.secrets]  # fmt: skip
    if not ports:
        details["ports"] = [f"{p.host_ip}:{p.host_port}->{p.guest_port}/{p.protocol}" for p in config.ports]
    return details
