"""Local images: OCI layouts (dir and archive), docker-save archives, plain rootfs dirs."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from tests.support.images import (
    Member,
    build_busybox_rootfs,
    busybox_layout,
    image_config,
    layer_from_members,
    write_oci_layout,
)

from boxlite.errors import ConfigError, ImageError, NotFoundError
from boxlite.images import ImageManager
from boxlite.images.rootfs import fingerprint


def test_load_oci_layout_dir(tmp_path: Path) -> None:
    m = ImageManager(tmp_path / "home")
    (info,) = m.load(busybox_layout())
    assert info.reference == "localhost/busybox:latest"
    assert [i.reference for i in m.list()] == ["localhost/busybox:latest"]


async def test_layout_with_full_names_and_tags(tmp_path: Path) -> None:
    base = layer_from_members([Member("etc/", tarfile.DIRTYPE, mode=0o755), Member("etc/os-release", data=b"base\n")])
    top = layer_from_members([Member("etc/.wh.os-release"), Member("app", data=b"v2")])
    layout = tmp_path / "my-app"
    write_oci_layout(layout, [base], image_config([base], cmd=["/app"]), tag="v1")
    write_oci_layout(
        layout,
        [base, top],
        image_config([base, top], User="1000:1000", ExposedPorts={"8080/tcp": {}}, Labels={"a": "b"}),
        tag="ghcr.io/org/app:v2",
    )
    m = ImageManager(tmp_path / "home")
    infos = m.load(layout)
    assert sorted(i.reference for i in infos) == ["ghcr.io/org/app:v2", "localhost/my-app:v1"]
    v1 = await m.resolve("localhost/my-app:v1")
    v2 = await m.resolve("ghcr.io/org/app:v2")  # from the store: no network
    assert v1.layers[0] == v2.layers[0] and len(v2.layers) == 2
    assert v1.config.cmd == ["/app"]
    assert v2.config.user == "1000:1000" and v2.config.exposed_ports == ["8080/tcp"]
    assert v2.config.labels == {"a": "b"}
    assert stat.S_ISCHR(os.lstat(v2.layers[1] / "etc/os-release").st_mode)


async def test_docker_archive_via_skopeo(tmp_path: Path) -> None:
    archive = tmp_path / "bb.tar"
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--additional-tag",
            "bb:extra",
            f"oci:{busybox_layout()}:latest",
            f"docker-archive:{archive}:example.com/tools/busybox:1.0",
        ],
        check=True,
        capture_output=True,
    )
    m = ImageManager(tmp_path / "home")
    infos = m.load(archive)
    assert sorted(i.reference for i in infos) == ["docker.io/library/bb:extra", "example.com/tools/busybox:1.0"]
    assert len({i.digest for i in infos}) == 1
    prepared = await m.resolve("example.com/tools/busybox:1.0")
    assert (prepared.layers[0] / "bin/busybox").is_file()
    assert prepared.config.cmd == ["/bin/sh"]
    assert os.lstat(prepared.layers[0] / "bin/busybox").st_uid == 0


def test_oci_archive_tarball(tmp_path: Path) -> None:
    archive = tmp_path / "bb-oci.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(busybox_layout(), arcname=".")
    m = ImageManager(tmp_path / "home")
    (info,) = m.load(archive)
    assert info.reference == "localhost/bb-oci:latest"


def test_load_rejects_corrupt_layout(tmp_path: Path) -> None:
    layout = tmp_path / "bad"
    shutil.copytree(busybox_layout(), layout)
    blobs = sorted((layout / "blobs/sha256").iterdir(), key=lambda p: p.stat().st_size)
    big = blobs[-1]
    data = bytearray(big.read_bytes())
    data[len(data) // 2] ^= 0xFF
    big.write_bytes(bytes(data))
    m = ImageManager(tmp_path / "home")
    with pytest.raises(ImageError):
        m.load(layout)
    assert m.list() == []
    assert not (m.store.blobs / big.name).exists()
    with pytest.raises(ImageError):
        m.load(tmp_path / "missing")
    (tmp_path / "junk.tar").write_bytes(b"junk" * 100)
    with pytest.raises(ImageError):
        m.load(tmp_path / "junk.tar")


async def test_rootfs_path_import_keeps_ownership_and_is_cached(tmp_path: Path) -> None:
    src = build_busybox_rootfs(tmp_path / "rootfs")
    os.link(src / "etc/passwd", src / "etc/passwd.hl")
    os.mknod(src / "dev/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    m = ImageManager(tmp_path / "home")
    p1 = await m.resolve(rootfs_path=str(src))
    (root,) = p1.layers
    assert p1.image_id.startswith("rootfs:") and p1.reference is None
    assert p1.image_id == f"rootfs:{fingerprint(src)}"
    assert root == m.store.layers / p1.image_id.split(":")[1] / "root"
    assert os.lstat(root / "bin/busybox").st_uid == 0
    assert os.lstat(root / "home/user").st_uid == 1000
    assert stat.S_IMODE(os.lstat(root / "tmp").st_mode) == 0o1777
    assert os.readlink(root / "bin/sh") == "busybox"
    assert os.lstat(root / "etc/passwd").st_ino == os.lstat(root / "etc/passwd.hl").st_ino
    assert not os.path.lexists(root / "dev/null")  # no device nodes on the host: the box gets its own /dev
    assert os.lstat(src / "bin/busybox").st_uid == 0  # source untouched
    p2 = await m.resolve(rootfs_path=str(src))
    assert p2 == p1
    (src / "etc/new").write_text("changed")
    p3 = await m.resolve(rootfs_path=str(src))
    assert p3.image_id != p1.image_id and (p3.layers[0] / "etc/new").exists()


async def test_shifted_layers_of_an_older_store_are_never_used_unshifted(tmp_path: Path) -> None:
    """A home from before id-mapped mounts holds layers shifted by the uid base in
    ``images/layers``: a new box gets a fresh unshifted copy; gc keeps the old one only while
    a box uses it."""
    src = build_busybox_rootfs(tmp_path / "rootfs")
    m = ImageManager(tmp_path / "home")
    old = m.store.legacy_layers / fingerprint(src) / "root"
    shutil.copytree(src, old, symlinks=True)
    for dirpath, dirnames, filenames in os.walk(old):
        for name in [".", *dirnames, *filenames]:
            os.chown(os.path.join(dirpath, name), 100000, 100000, follow_symlinks=False)
    (root,) = (await m.resolve(rootfs_path=str(src))).layers
    assert root.parent.parent == m.store.layers != m.store.legacy_layers
    assert os.lstat(root / "bin/busybox").st_uid == 0
    assert m.layers_shifted([old]) and not m.layers_shifted([root])
    m.gc(in_use_layers={old, root})
    assert old.is_dir() and root.is_dir()
    m.gc(in_use_layers={root})
    assert not old.exists() and root.is_dir()


async def test_rootfs_path_may_be_oci_layout(tmp_path: Path) -> None:
    m = ImageManager(tmp_path / "home")
    prepared = await m.resolve(rootfs_path=str(busybox_layout()))
    assert prepared.image_id.startswith("sha256:")
    assert prepared.reference == "localhost/busybox:latest"


async def test_resolve_argument_errors(tmp_path: Path) -> None:
    m = ImageManager(tmp_path / "home")
    with pytest.raises(ConfigError):
        await m.resolve()
    with pytest.raises(ConfigError):
        await m.resolve("alpine", rootfs_path="/")
    with pytest.raises(NotFoundError):
        await m.resolve(rootfs_path=str(tmp_path / "missing"))
    with pytest.raises(NotFoundError):
        await m.resolve("sha256:" + "0" * 64)
