"""Recipe images as OCI images: a reproducible layer, stored and listed like a pull, run by reference."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tarfile
import time
import types
from pathlib import Path

import pytest
import zstandard

import boxlite
from boxlite.errors import ImageTooLargeError, NotFoundError
from boxlite.images import ImageManager, recipes
from boxlite.images.build import EPOCH, write_oci_layout
from boxlite.images.debian import build_once
from boxlite.images.limits import ImageLimits

OLD = 1_600_000_000  # a time from a .deb, older than EPOCH: kept


def recipe_like_tree(base: Path, dest: Path, reverse: bool = False) -> Path:
    """``base`` plus what recipes write: fresh files, a hard link, a FIFO, a setuid file, other
    owners, a long and a non-ASCII name; created in the given order (inode order differs)."""
    shutil.copytree(base, dest, symlinks=True)
    files = {
        "etc/machine-id": "b0c1e7e0\n",
        "usr/local/bin/tool": "#!/bin/sh\necho tool\n",
        "opt/" + "d" * 60 + "/" + "f" * 80: "long\n",
        "usr/share/caf\u00e9.txt": "unicode\n",
        "marker": "recipe image\n",
    }
    for rel, text in sorted(files.items(), reverse=reverse):
        p = dest / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    os.chmod(dest / "usr/local/bin/tool", 0o4755)
    os.link(dest / "usr/local/bin/tool", dest / "usr/local/bin/tool-again")
    os.mkfifo(dest / "run/fifo")
    os.chown(dest / "marker", 1000, 1000)
    os.utime(dest / "etc/machine-id", (OLD, OLD))
    return dest


def layer_members(layout: Path) -> list[tarfile.TarInfo]:
    index = json.loads((layout / "index.json").read_bytes())
    manifest = json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]).read_bytes())
    blob = layout / "blobs/sha256" / manifest["layers"][0]["digest"].split(":")[1]
    with (
        open(blob, "rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw) as zst,
        tarfile.open(fileobj=zst, mode="r|") as tf,
    ):
        return list(tf)


def test_same_inputs_give_the_same_manifest_digest(busybox_rootfs: Path, tmp_path: Path) -> None:
    refs = ["boxlite.local/tiny:k1", "boxlite.local/tiny:latest"]
    a = recipe_like_tree(busybox_rootfs, tmp_path / "a")
    time.sleep(1.1)  # the second build's files are written at another second
    b = recipe_like_tree(busybox_rootfs, tmp_path / "b", reverse=True)
    first = write_oci_layout(a, tmp_path / "la", refs)
    assert write_oci_layout(b, tmp_path / "lb", refs) == first
    for rel in ("index.json", "oci-layout"):
        assert (tmp_path / "la" / rel).read_bytes() == (tmp_path / "lb" / rel).read_bytes()

    members = layer_members(tmp_path / "la")
    names = [m.name for m in members]
    assert names == sorted(names, key=lambda n: n.split("/")) and "marker" in names
    assert all(m.mtime <= EPOCH and m.uname == "" and m.gname == "" for m in members)
    assert not any(k in m.pax_headers for m in members for k in ("atime", "ctime", "mtime"))
    by_name = {m.name: m for m in members}
    assert by_name["etc/machine-id"].mtime == OLD  # a package's time stays
    assert (by_name["marker"].uid, by_name["marker"].gid) == (1000, 1000)
    assert by_name["usr/local/bin/tool"].mode == 0o4755
    assert by_name["usr/local/bin/tool-again"].islnk() and by_name["run/fifo"].isfifo()

    (b / "marker").write_text("recipe image, changed\n")  # content matters
    assert write_oci_layout(b, tmp_path / "lc", refs) != first


@pytest.fixture
def tiny_recipe(busybox_rootfs: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> types.SimpleNamespace:
    """A recipe ``tiny`` (a busybox tree) registered like the real ones; counts its builds."""
    state = types.SimpleNamespace(builds=0)

    def ensure(cache_dir: Path) -> Path:
        def build(work: Path) -> None:
            state.builds += 1
            shutil.rmtree(work)
            recipe_like_tree(busybox_rootfs, work)

        return build_once(Path(cache_dir) / "rootfs" / "0123456789abcdef", build)

    module = types.ModuleType("boxlite_test_tiny_recipe")
    module.ensure = ensure  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(recipes.RECIPES, "tiny", module.__name__)
    return state


async def test_recipe_image_is_listed_and_a_box_runs_it_by_reference(
    runtime: boxlite.Boxlite, tiny_recipe: types.SimpleNamespace
) -> None:
    home = runtime.home.root
    ref = recipes.recipe_image("tiny", home)
    assert ref == "boxlite.local/tiny:0123456789abcdef"
    listed = {i.reference: i for i in await runtime.images.list()}
    assert listed[ref].digest == listed["boxlite.local/tiny:latest"].digest
    assert recipes.recipe_image("tiny", home) == ref and tiny_recipe.builds == 1  # cached: no rebuild
    await runtime.images.remove("boxlite.local/tiny:latest")
    await runtime.images.remove(ref)
    assert recipes.recipe_image("tiny", home) == ref and tiny_recipe.builds == 1  # re-imported from the layout

    async with boxlite.SimpleBox(image="boxlite.local/tiny:latest", runtime=runtime) as box:  # one boot (VM: TCG)
        result = await box.exec("cat", "/marker")
        assert (result.exit_code, result.stdout) == (0, "recipe image\n")
    digest = listed[ref].digest
    manifest = json.loads((home / "images/blobs/sha256" / digest.split(":")[1]).read_bytes())
    layer_hex = manifest["layers"][0]["digest"].split(":")[1]
    assert (home / "images/layers-v2" / layer_hex / "root/marker").is_file()  # the store's unpacker made it


async def test_local_references_are_never_pulled(home: Path) -> None:
    manager = ImageManager(home, registries=[])
    with pytest.raises(NotFoundError, match="boxlite images build browser"):
        await manager.pull("boxlite.local/browser:latest")
    with pytest.raises(NotFoundError):
        await manager.resolve(image="boxlite.local/browser:nope")


async def test_the_store_applies_its_limits_to_a_built_image(home: Path, tiny_recipe: types.SimpleNamespace) -> None:
    manager = ImageManager(home, registries=[], limits=ImageLimits(max_layer_entries=10))
    ref = recipes.ensure_recipe_image("tiny", manager)
    with pytest.raises(ImageTooLargeError):
        await manager.resolve(image=ref)
