"""Store index, remove, gc, registry configuration."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import pytest
from tests.support.images import Member, busybox_layout, image_config, layer_from_members, write_oci_layout

from boxlite.errors import ConfigError, ImageError, NotFoundError
from boxlite.images import ImageManager, ImageRegistry, load_registries_from_config
from boxlite.images.registry_config import docker_credentials


def _two_images(tmp_path: Path) -> tuple[ImageManager, Path]:
    shared = layer_from_members([Member("shared", data=b"s")])
    own = layer_from_members([Member("own", data=b"o" * 1000)])
    layout = tmp_path / "two"
    write_oci_layout(layout, [shared], image_config([shared]), tag="a")
    write_oci_layout(layout, [shared, own], image_config([shared, own]), tag="b")
    m = ImageManager(tmp_path / "home")
    m.load(layout)
    return m, layout


def test_index_is_sqlite_wal(tmp_path: Path) -> None:
    m, _ = _two_images(tmp_path)
    db = sqlite3.connect(m.store.db_path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    refs = sorted(r[0] for r in db.execute("SELECT reference FROM images"))
    assert refs == ["localhost/two:a", "localhost/two:b"]


async def test_gc_keeps_referenced_and_in_use(tmp_path: Path) -> None:
    m, _ = _two_images(tmp_path)
    a = await m.resolve("localhost/two:a")
    b = await m.resolve("localhost/two:b")
    assert a.layers[0] == b.layers[0]
    assert m.gc() == 0
    m.remove("localhost/two:b")
    assert [i.reference for i in m.list()] == ["localhost/two:a"]
    freed = m.gc(in_use_layers={b.layers[1]})
    assert freed > 0
    assert b.layers[1].is_dir() and a.layers[0].is_dir()  # in use / still referenced
    freed2 = m.gc()
    assert freed2 > 0 and not b.layers[1].exists() and a.layers[0].is_dir()
    m.remove("localhost/two:a")
    m.gc()
    assert list(m.store.blobs.iterdir()) == [] and list(m.store.layers.iterdir()) == []
    assert [p.name for p in m.store.locks.iterdir()] == ["gc.lock"]


async def test_gc_removes_stale_rootfs_layers_and_tmp(tmp_path: Path) -> None:
    from tests.support.images import build_busybox_rootfs

    m = ImageManager(tmp_path / "home")
    p = await m.resolve(rootfs_path=str(build_busybox_rootfs(tmp_path / "r")))
    (m.store.tmp / "leftover.partial").write_bytes(b"x" * 10)
    assert m.gc({p.layers[0]}) == 10 and p.layers[0].is_dir()
    assert m.gc() > 1_000_000 and not p.layers[0].exists()


def test_remove_by_digest_needs_force_when_shared(tmp_path: Path) -> None:
    m = ImageManager(tmp_path / "home")
    (info,) = m.load(busybox_layout())
    layout2 = tmp_path / "bb2"
    import shutil

    shutil.copytree(busybox_layout(), layout2)
    m.load(layout2)
    assert len(m.list()) == 2
    with pytest.raises(ImageError, match="force"):
        m.remove(info.digest)
    m.remove(info.image_id.split(":")[1][:12], force=True)
    assert m.list() == []
    with pytest.raises(NotFoundError):
        m.remove("localhost/busybox:latest")
    with pytest.raises(NotFoundError):
        m.remove("Not A Reference!")


def test_list_fields(tmp_path: Path) -> None:
    m = ImageManager(tmp_path / "home")
    (info,) = m.load(busybox_layout())
    (row,) = m.list()
    assert row == info
    assert row.size == sum(p.stat().st_size for p in m.store.blobs.iterdir())


def test_registry_config(tmp_path: Path) -> None:
    assert load_registries_from_config(tmp_path) == []
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "image_registries": [
                    {"host": "mirror.local:5000", "transport": "http", "search": True},
                    {"host": "ghcr.io", "username": "u", "password": "p"},
                ]
            }
        )
    )
    regs = load_registries_from_config(tmp_path)
    assert regs == [
        ImageRegistry("mirror.local:5000", "http", search=True),
        ImageRegistry("ghcr.io", username="u", password="p"),
    ]
    assert ImageManager(tmp_path).registries == regs
    (tmp_path / "config.json").write_text(json.dumps({"image_registries": [{"host": "x", "bogus": 1}]}))
    with pytest.raises(ConfigError):
        load_registries_from_config(tmp_path)
    with pytest.raises(ConfigError):
        ImageRegistry("h", transport="ftp")
    with pytest.raises(ConfigError):
        ImageRegistry("h", username="u")


def test_docker_credentials(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    enc = base64.b64encode(b"alice:pw:with:colons").decode()
    cfg.write_text(
        json.dumps(
            {
                "auths": {
                    "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:tok").decode()},
                    "reg.example:5000": {"auth": enc},
                    "https://ghcr.io": {"username": "bob", "password": "x"},
                }
            }
        )
    )
    assert docker_credentials("docker.io", cfg) == ("hub", "tok")
    assert docker_credentials("reg.example:5000", cfg) == ("alice", "pw:with:colons")
    assert docker_credentials("ghcr.io", cfg) == ("bob", "x")
    assert docker_credentials("other.io", cfg) is None
