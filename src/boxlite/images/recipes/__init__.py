"""Offline images of the specialised boxes (BrowserBox, ComputerBox, SkillBox).

BoxLite pulls these from Docker Hub; we build them from Debian packages (and npm for Node
tools) so they work on a machine with no container registry. Each recipe module exposes
``ensure(cache_dir: Path) -> Path``: build once under a lock, keyed by its content, and return
the root filesystem directory (its name is the content key).

:func:`ensure_recipe_image` turns that tree into a reproducible OCI image (:mod:`..build`),
kept as an OCI layout beside the tree (``<cache>/oci/<key>``, so a new home imports it instead
of building again) and loaded into the home's image store as ``boxlite.local/<name>:<key>`` and
``boxlite.local/<name>:latest``: ``boxlite images`` lists it, boxes run it by reference.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import ConfigError, UnsupportedOptionError
from ..build import LOCAL_REGISTRY, layout_manifest_digest, write_oci_layout
from ..locks import file_lock

if TYPE_CHECKING:
    from ..manager import ImageManager

RECIPES: dict[str, str] = {
    "browser": "boxlite.images.recipes.browser",
    "desktop": "boxlite.images.recipes.desktop",
    "skill": "boxlite.images.recipes.skill",
}
LATEST = "latest"


def recipe_reference(name: str, tag: str = LATEST) -> str:
    """The local reference of recipe ``name``'s image (``boxlite.local/browser:latest``)."""
    return f"{LOCAL_REGISTRY}/{name}:{tag}"


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


def ensure_recipe_layout(name: str, images_dir: Path) -> tuple[Path, str]:
    """(OCI layout dir, content key) of recipe ``name``: its tree ``<cache>/rootfs/<key>`` built (if
    needed), then written once as a reproducible image to ``<cache>/oci/<key>``."""
    rootfs = ensure_recipe(name, images_dir).resolve()
    key = rootfs.name
    layout = rootfs.parent.parent / "oci" / key  # beside the tree, also when a link points at a shared cache
    if layout_manifest_digest(layout) is None:
        layout.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(layout.parent / f"{key}.lock"):
            if layout_manifest_digest(layout) is None:
                labels = {
                    "org.opencontainers.image.title": name,
                    "io.boxlite.recipe": name,
                    "io.boxlite.recipe.key": key,
                }
                write_oci_layout(rootfs, layout, [recipe_reference(name, key), recipe_reference(name)], labels)
    return layout, key


def ensure_recipe_image(name: str, manager: ImageManager) -> str:
    """Build (if needed) recipe ``name``'s image into ``manager``'s store; return its reference
    (``boxlite.local/<name>:<key>``; ``:latest`` names the same image).

    The store takes the layout as it takes ``boxlite load``: blobs copied and checked against
    their digests, size limits applied; the layer is unpacked by the same code as a pulled one
    when a box first uses it.
    """
    from ..catalog import is_complete

    layout, key = ensure_recipe_layout(name, manager.home / "images")
    ref = recipe_reference(name, key)
    info = manager.store.get_ref(ref)
    if info is None or info.digest != layout_manifest_digest(layout) or not is_complete(manager.store, info.digest):
        manager.load(layout)
    return ref


def recipe_image(name: str, home: Path) -> str:
    """:func:`ensure_recipe_image` for the image store of BoxLite home ``home`` (what a
    BrowserBox/ComputerBox/SkillBox without ``image``/``rootfs_path`` runs)."""
    from ..manager import ImageManager

    return ensure_recipe_image(name, ImageManager(Path(home), registries=[]))
