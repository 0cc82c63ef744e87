"""Stop-gaps for things the public SDK does not offer yet (each one is a requested SDK change).

Keep every access to private runtime state in this module.
"""

from __future__ import annotations

from typing import Any

from ..api.box import Box
from ..api.runtime import Boxlite
from ..errors import BoxliteError


def image_config(box: Box) -> dict[str, Any]:
    """The box image's config (entrypoint, cmd, env, working_dir, user).

    Wanted: ``BoxInfo.image_config``."""
    return dict(box._record().image_config or {})


async def image_command(rt: Boxlite, image: str) -> list[str]:
    """ENTRYPOINT + CMD of ``image`` (pulled if missing), before any box exists.

    Wanted: ``runtime.images.config(ref)``, or a BoxOptions way to say "the image's command"."""
    prepared = await rt._images.resolve(image=image)
    return [*(prepared.config.entrypoint or []), *(prepared.config.cmd or [])]


def has_image(rt: Boxlite, image: str) -> bool:
    """Whether ``image`` resolves to a stored image (so creating a box will not pull).

    Wanted: ``runtime.images.get(ref)``."""
    try:
        return rt._images._lookup(image) is not None
    except BoxliteError:
        return False


def default_command(box: Box, entrypoint: list[str] | None, cmd: list[str]) -> list[str]:
    """Docker semantics: ENTRYPOINT + (CMD given on the command line, else the image's CMD)."""
    cfg = image_config(box)
    ep = entrypoint if entrypoint is not None else list(cfg.get("entrypoint") or [])
    args = cmd or ([] if entrypoint is not None else list(cfg.get("cmd") or []))
    return [*ep, *args]


def make_detached(box: Box) -> None:
    """Let a box created attached (``run`` without ``-d``) outlive this process when started.

    Wanted: ``Box.start(detach=True)``."""
    core = box._runtime._core
    rec = core.record(box.id)
    if not rec.detach:
        rec.detach = True
        core.db.update(rec)
        box._record()
