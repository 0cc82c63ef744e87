"""Small helpers between the CLI and the SDK (image commands, detaching)."""

from __future__ import annotations

from typing import Any

from ..api.box import Box
from ..api.runtime import Boxlite


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
    """Start a box so that it outlives this process (also one created by a foreground ``run``)."""
    await box.start(detach=True)
