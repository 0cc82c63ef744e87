"""Offline images of the specialised boxes (BrowserBox, ComputerBox, SkillBox).

BoxLite pulls these from Docker Hub; we build them from Debian packages (and npm for Node
tools) so they work on a machine with no container registry. Each recipe module exposes
``ensure(cache_dir: Path) -> Path``: build once under a lock, keyed by its content, and return
the root filesystem directory a box can use as ``rootfs_path``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ...errors import ConfigError, UnsupportedOptionError

RECIPES: dict[str, str] = {
    "browser": "boxlite.images.recipes.browser",
    "desktop": "boxlite.images.recipes.desktop",
    "skill": "boxlite.images.recipes.skill",
}


def ensure_recipe(name: str, images_dir: Path) -> Path:
    """Build (if needed) and return the rootfs of recipe ``name`` under ``images_dir/<name>``."""
    module_name = RECIPES.get(name)
    if module_name is None:
        raise ConfigError(f"unknown image recipe {name!r}; known: {', '.join(sorted(RECIPES))}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        raise UnsupportedOptionError(
            f"image recipe {name!r}", "its recipe module is not part of this version"
        ) from None
    path: Path = module.ensure(Path(images_dir) / name)
    return path
