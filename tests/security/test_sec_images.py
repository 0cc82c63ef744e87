"""Hostile images and registries (issue 18, items 4, 5, 7-9): each test serves the attack from
the real registry (Debian's docker-registry on loopback), a hostile registry of our own, or a
local OCI layout, and checks that it no longer reaches the host."""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import os
import stat
import struct
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import boxlite
from boxlite.errors import (
    BoxliteError,
    ImageTooLargeError,
    ParseError,
    RegistryTimeoutError,
    UnsafeLayerError,
)
from boxlite.images import ImageManager, ImageRegistry
from boxlite.images.limits import ImageLimits
from boxlite.images.retry import RetryPolicy
from boxlite.images.unpack import unpack_layer
from boxlite.runtime.home import Home
from support.images import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    Layer,
    Member,
    build_busybox_rootfs,
    image_config,
    layer_from_dir,
    layer_from_members,
    sha256,
    write_oci_layout,
)
from support.registry import RegistryServer, start_registry

D, R, C, B, F = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE
BOX_UID = 100000
GiB = 1 << 30
MiB = 1 << 20
# vfs_cap_data v2, effective, permitted = CAP_SETUID (7): what `setcap cap_setuid=ep` writes
CAP_SETUID_EP = struct.pack("<IIIII", 0x02000001, 1 << 7, 0, 0, 0)
# POSIX ACL granting host user 65534 rwx: user::rwx, user:65534:rwx, group::r-x, mask::rwx, other::r-x
ACL_FOR_NOBODY = struct.pack("<I", 2) + b"".join(
    struct.pack("<HHI", tag, perm, uid)
    for tag, perm, uid in (
        (1, 7, 0xFFFFFFFF),
        (2, 7, 65534),
        (4, 5, 0xFFFFFFFF),
        (0x10, 7, 0xFFFFFFFF),
        (0x20, 5, 0xFFFFFFFF),
    )
)


def _pax(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    server = start_registry(tmp_path_factory.mktemp("sec-registry"))
    try:
        yield server
    finally:
        server.stop()


def _manager(home: Path, host: str | None = None, **limits: Any) -> ImageManager:
    regs = [ImageRegistry(host, transport="http")] if host else []
    m = ImageManager(home, regs, limits=dataclasses.replace(ImageLimits(), **limits))
    m.retry = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.05)
    return m


def _push(
    registry: RegistryServer, tmp: Path, name: str, layers: list[Layer], config: dict[str, Any] | None = None
) -> str:
    config = config or image_config(layers, cmd=["/bin/sh"])
    layout = write_oci_layout(tmp / f"layout-{name.replace('/', '-')}", layers, config)
    return registry.push_layout(layout, name)


def _as_uid(uid: int, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a host Python process whose uids and gids are all ``uid``."""
    return subprocess.run(
        ["/usr/bin/python3", "-I", "-c", code],
        user=uid,
        group=uid,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=30,
    )


def _special_nodes(root: Path) -> list[str]:
    """Character/block devices under ``root`` other than overlayfs whiteouts (0:0)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)) and st.st_rdev != 0:
                out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return out


def _hostile_members() -> list[Member]:
    xattrs = {
        "SCHILY.xattr.security.capability": _pax(CAP_SETUID_EP),
        "SCHILY.xattr.system.posix_acl_access": _pax(ACL_FOR_NOBODY),
        "SCHILY.xattr.security.selinux": "system_u:object_r:shadow_t:s0",
        "SCHILY.xattr.trusted.evil": "x",
        "SCHILY.xattr.user.overlay.redirect": "/etc",
        "SCHILY.xattr.user.note": "kept",
    }
    return [
        Member("usr/", D, mode=0o755),
        Member("usr/bin/", D, mode=0o755),
        Member("usr/bin/capped", data=b"#!/bin/sh\nid\n", mode=0o755, pax=xattrs),
        Member("usr/bin/suid", data=b"#!/bin/sh\nid\n", mode=0o4755),
        Member("dev/", D, mode=0o755),
        Member("dev/mem", C, mode=0o666, devmajor=1, devminor=1),
        Member("opt/", D, mode=0o755),
        Member("opt/sda", B, mode=0o666, devmajor=8, devminor=0),
        Member("opt/fifo", F, mode=0o6666),
    ]


# -- item 4: capabilities, ACLs, devices, setuid ------------------------------------------------


async def test_layer_cannot_plant_capabilities_acls_or_device_nodes(
    registry: RegistryServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ref = _push(registry, tmp_path, "sec/privileged", [layer_from_members(_hostile_members())])
    m = _manager(tmp_path / "home", registry.host)
    with caplog.at_level(logging.WARNING, logger="boxlite.images"):
        (root,) = (await m.resolve(ref)).layers
    capped = root / "usr/bin/capped"
    scratch = root.parent / "scratch"
    scratch.write_bytes(b"")
    os.setxattr(scratch, "security.capability", CAP_SETUID_EP)  # the attack would land on this filesystem
    os.setxattr(scratch, "system.posix_acl_access", ACL_FOR_NOBODY)
    names = set(os.listxattr(capped))
    assert not names & {
        "security.capability",
        "system.posix_acl_access",
        "security.selinux",
        "trusted.evil",
        "user.overlay.redirect",
    }, names
    assert names <= {"user.note"}
    assert _special_nodes(root) == []
    assert not (root / "dev/mem").exists() and not (root / "opt/sda").exists()
    fifo = os.lstat(root / "opt/fifo")
    assert stat.S_ISFIFO(fifo.st_mode) and stat.S_IMODE(fifo.st_mode) == 0o666
    suid = os.lstat(root / "usr/bin/suid")  # kept for the box, owned by the image's root (box root in the box)...
    assert stat.S_IMODE(suid.st_mode) == 0o4755 and suid.st_uid == 0
    for private in (root.parent, m.store.layers, m.store.root):  # ...so no host user may reach it
        st = os.stat(private)
        assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid(), private
    text = caplog.text  # ...and the skipped nodes and xattrs are named in the log
    assert "dev/mem" in text and "opt/sda" in text and "security.capability" in text


def test_rootfs_import_drops_devices_and_capabilities(tmp_path: Path) -> None:
    src = build_busybox_rootfs(tmp_path / "rootfs")
    os.mknod(src / "mem", stat.S_IFCHR | 0o666, os.makedev(1, 1))
    os.setxattr(src / "bin/busybox", "security.capability", CAP_SETUID_EP)
    m = _manager(tmp_path / "home")
    layer, _ = m._import_rootfs(src)
    assert os.path.exists(layer / "bin/busybox") and not os.path.lexists(layer / "mem")
    assert "security.capability" not in os.listxattr(layer / "bin/busybox")


# -- items 4 + 5: nothing under the home is reachable by other host users or box uids --------------


def test_home_store_and_box_dirs_are_private(tmp_path: Path) -> None:
    old = tmp_path / "old-home"
    for sub in ("boxes", "images", "cache"):
        (old / sub).mkdir(parents=True)
        os.chmod(old / sub, 0o755)
    for path in (tmp_path / "new-home", old):
        home = Home.resolve(path)
        for sub in ("boxes", "images", "cache"):
            st = os.stat(home.root / sub)
            assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid(), sub
    m = _manager(tmp_path / "bare")  # an ImageManager on its own makes its store private too
    assert stat.S_IMODE(os.stat(m.store.root).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(m.store.layers).st_mode) == 0o700


async def test_box_uid_on_the_host_cannot_modify_a_shared_layer(tmp_path: Path) -> None:
    """Item 5: a host process running as box root's host uid (what a setuid file planted by box
    root gives) cannot write, chmod, replace or add files of a shared image layer, nor even
    reach the layer: each layer dir is 0700, and its files keep the image's (root) ownership."""
    layer = layer_from_members(
        [Member("etc/", D, mode=0o755), Member("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n", mode=0o644)]
    )
    layout = write_oci_layout(tmp_path / "layout", [layer])
    m = ImageManager(Home.resolve(tmp_path / "home").root)
    (info,) = m.load(layout)
    (root,) = (await m.resolve(info.reference)).layers
    target = root / "etc/passwd"
    st = os.lstat(target)
    assert st.st_uid == 0 and st.st_mode & 0o200  # unshifted: ownership and the 0700 path keep box uids out
    code = f"""
import os, sys
target, layer = {str(target)!r}, {str(root)!r}
attempts = {{
    "write": lambda: open(target, "r+b").write(b"pwned"),
    "chmod": lambda: os.chmod(target, 0o666),
    "unlink": lambda: os.unlink(target),
    "create": lambda: open(os.path.join(layer, "etc/new"), "xb"),
    "list": lambda: os.listdir(os.path.dirname(os.path.dirname(os.path.dirname(layer)))),
    "list_layer": lambda: os.listdir(layer),
    "stat": lambda: os.stat(target),
}}
for name, op in attempts.items():
    try:
        op()
    except PermissionError:
        continue
    print("succeeded:", name)
    sys.exit(1)
print("all refused")
"""
    for uid in (BOX_UID, 65534):
        r = _as_uid(uid, code)
        assert r.returncode == 0 and r.stdout.strip() == "all refused", (uid, r.stdout, r.stderr)
    assert target.read_bytes() == b"root:x:0:0::/root:/bin/sh\n"


async def test_box_from_hostile_image(registry: RegistryServer, tmp_path: Path, engine: str) -> None:
    """On each engine: the hostile image runs, its device nodes are absent in the box (the box's
    /dev is the engine's), setuid bits still work for the box, and a setuid file box root makes
    in its writable layer is unreachable for host users."""
    busybox = build_busybox_rootfs(tmp_path / "busybox")
    base = layer_from_dir(busybox)
    ref = _push(registry, tmp_path, "sec/hostile-box", [base, layer_from_members(_hostile_members())])
    home = tmp_path / "home"
    rt = boxlite.Boxlite(
        boxlite.Options(
            home_dir=str(home), engine=engine, image_registries=[ImageRegistry(registry.host, transport="http")]
        )
    )
    try:
        async with boxlite.SimpleBox(image=ref, runtime=rt) as box:
            script = (
                "ls /opt; test -e /dev/mem || echo no-mem; echo x > /dev/null && echo null-ok; "
                "stat -c %a /usr/bin/suid; cp /bin/busybox /root/planted; chmod 4755 /root/planted 2>/dev/null; "
                "true"
            )
            r = await box.exec("sh", "-c", script)
            assert r.exit_code == 0, r
            assert r.stdout.split() == ["fifo", "no-mem", "null-ok", "4755"], r.stdout
            box_dir = rt.home.box_dir(box.id)
            planted = box_dir / "upper/root/planted"
            if engine == "namespace":  # the writable layer is a host directory: the file is really there
                assert os.lstat(planted).st_uid == BOX_UID  # (seccomp also refuses setuid bits now)
            code = (
                f"import os\ntry:\n    os.stat({str(planted)!r})\nexcept PermissionError:\n    print('refused')\n"
                f"try:\n    os.listdir({str(box_dir)!r})\nexcept PermissionError:\n    print('refused')\n"
            )
            for uid in (65534, 1000):
                out = _as_uid(uid, code)
                assert out.stdout.split() == ["refused", "refused"], out
    finally:
        await rt.shutdown(timeout=2)


# -- items 7 + 8: expansion caps --------------------------------------------------------------------


def _gzip_bomb(logical: int, piece: int = 16 * MiB) -> Layer:
    """A gzip layer declaring one ``logical``-byte file of zeros, made of repeated gzip members
    (cheap to build; a few KiB per 16 MiB)."""
    ti = tarfile.TarInfo("bomb")
    ti.size, ti.mode, ti.mtime = logical, 0o644, 1700000000
    header = ti.tobuf(tarfile.GNU_FORMAT)
    zeros = gzip.compress(bytes(piece), 9, mtime=0)
    parts, left = [gzip.compress(header, mtime=0)], logical
    while left >= piece:
        parts.append(zeros)
        left -= piece
    tail = bytes(left) + bytes(-logical % 512) + bytes(1024)
    parts.append(gzip.compress(tail, mtime=0))
    return Layer(b"".join(parts), OCI_LAYER + "+gzip", sha256(b"not verified: refused before the end"))


def _gnu_sparse(name: str, logical: int) -> bytes:
    """A tar with one old-GNU sparse member: ``logical`` bytes, one 512-byte data region at the end."""
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime = 512, 0o644, 1700000000
    buf = bytearray(ti.tobuf(tarfile.GNU_FORMAT))
    buf[156:157] = tarfile.GNUTYPE_SPARSE
    buf[386:398] = b"%011o\0" % (logical - 512)  # sparse map entry 0: offset...
    buf[398:410] = b"%011o\0" % 512  # ...and length
    buf[483:495] = b"%011o\0" % logical  # real size
    buf[148:156] = b"        "
    buf[148:156] = b"%06o\0 " % sum(buf)
    return bytes(buf) + b"x" * 512 + bytes(1024) + bytes(10240 - (len(buf) + 512 + 1024) % 10240)


async def test_tar_bomb_is_refused_with_default_limits(registry: RegistryServer, tmp_path: Path) -> None:
    bomb = _gzip_bomb(3 * GiB // 2)
    assert len(bomb.blob) < 8 * MiB
    ref = _push(registry, tmp_path, "sec/bomb", [bomb])
    m = ImageManager(tmp_path / "home", [ImageRegistry(registry.host, transport="http")])
    with pytest.raises(ImageTooLargeError, match="expands more than"):
        await m.resolve(ref)
    assert list(m.store.layers.iterdir()) == [] and list(m.store.tmp.iterdir()) == []


def test_sparse_layer_is_refused_by_default_and_stays_sparse_when_allowed(tmp_path: Path) -> None:
    blob = tmp_path / "sparse.tar"
    blob.write_bytes(_gnu_sparse("huge", 3 * GiB // 2))
    (tmp_path / "a").mkdir()
    with pytest.raises(ImageTooLargeError):
        unpack_layer(blob, tmp_path / "a", limits=ImageLimits())
    assert os.listdir(tmp_path / "a") == []  # refused from the header, before any data
    blob.write_bytes(_gnu_sparse("huge", 256 * MiB))
    zeros = tmp_path / "zeros.tar.gz"
    zeros.write_bytes(layer_from_members([Member("zeros", data=bytes(32 * MiB))]).blob)
    relaxed = ImageLimits(max_ratio=0)
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    unpack_layer(blob, tmp_path / "b", limits=relaxed)
    unpack_layer(zeros, tmp_path / "c", limits=relaxed)
    for path, size in ((tmp_path / "b/huge", 256 * MiB), (tmp_path / "c/zeros", 32 * MiB)):
        st = os.stat(path)
        assert st.st_size == size and st.st_blocks * 512 < MiB, (path, st.st_blocks)
    assert (tmp_path / "b/huge").open("rb").read(1) == b"\0"


async def test_layer_and_image_entry_counts_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    many = layer_from_members([Member(f"f{i}") for i in range(150)])
    other = layer_from_members([Member(f"g{i}") for i in range(90)])
    write_oci_layout(tmp_path / "one", [many], tag="one")
    write_oci_layout(tmp_path / "two", [other, layer_from_members([Member(f"h{i}") for i in range(90)])], tag="two")
    monkeypatch.setenv("BOXLITE_IMAGE_MAX_LAYER_ENTRIES", "100")  # configurable from the environment
    m = ImageManager(tmp_path / "home")
    assert m.limits.max_layer_entries == 100
    (one,) = m.load(tmp_path / "one")
    with pytest.raises(ImageTooLargeError, match="more than 100 entries"):
        await m.resolve(one.reference)
    m.limits = dataclasses.replace(m.limits, max_image_entries=150)
    (two,) = m.load(tmp_path / "two")
    with pytest.raises(ImageTooLargeError, match="more than 150 entries"):
        await m.resolve(two.reference)
    m.limits = dataclasses.replace(m.limits, max_image_entries=0)
    assert len((await m.resolve(two.reference)).layers) == 2


def test_oversized_and_chained_tar_headers_are_refused(tmp_path: Path) -> None:
    big = tarfile.TarInfo("f")
    big.pax_headers = {"comment": "a" * (8 * MiB)}
    small = tarfile.TarInfo("g")
    small.pax_headers = {"comment": "b"}
    one = small.tobuf(tarfile.PAX_FORMAT)
    chain = one[:-512] * 20 + one  # 20 pax headers before one member
    for data, error in ((big.tobuf(tarfile.PAX_FORMAT), ImageTooLargeError), (chain, UnsafeLayerError)):
        blob = tmp_path / "blob"
        blob.write_bytes(gzip.compress(data + bytes(1024), 1))
        dest = tmp_path / f"d{error.__name__}"
        dest.mkdir()
        with pytest.raises(error):
            unpack_layer(blob, dest, limits=ImageLimits())
        with pytest.raises(error):  # the same as a `docker save` archive given to load()
            _manager(tmp_path / "home").load(blob)


async def test_huge_config_blob_is_refused_before_download(registry: RegistryServer, tmp_path: Path) -> None:
    """A config past the document cap is refused from its descriptor, before it is downloaded or
    read (skopeo refuses to push configs over 4 MiB, our default: the test lowers the cap)."""
    layer = layer_from_members([Member("a", data=b"a")])
    config = image_config([layer], Labels={"padding": "x" * (2 * MiB)})
    ref = _push(registry, tmp_path, "sec/bigconfig", [layer], config)
    m = _manager(tmp_path / "home", registry.host, max_document=MiB)
    with pytest.raises(ImageTooLargeError, match="image config"):
        await m.pull(ref)
    assert all(p.stat().st_size < MiB for p in m.store.blobs.iterdir())
    with pytest.raises(ImageTooLargeError):  # the same image from a local layout
        m.load(tmp_path / "layout-sec-bigconfig")
    big = m.store.blobs / ("0" * 64)  # a 300 MiB config already in a store is not read either
    with open(big, "wb") as f:
        f.truncate(300 * MiB)
    with pytest.raises(ImageTooLargeError):
        m.store.read_blob("sha256:" + "0" * 64, "image config")


# -- items 8 + 9: a hostile registry -----------------------------------------------------------------


class HostileRegistry:
    """A registry serving whatever the test puts in ``docs`` (path -> (content type, body)), with
    optional dribbling (``rate`` bytes/s) or silence (``mute``) for blob and manifest paths."""

    def __init__(self) -> None:
        self.docs: dict[str, tuple[str, bytes]] = {}
        self.rate: dict[str, float] = {}
        self.mute: set[str] = set()
        self.hits: list[str] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                registry.hits.append(self.path)
                path = self.path.split("?")[0]
                if path == "/v2/":
                    return self._answer(200, "application/json", b"{}")
                if path in registry.mute:
                    time.sleep(30)
                    return
                if path not in registry.docs:
                    return self._answer(404, "application/json", b'{"errors":[]}')
                ctype, body = registry.docs[path]
                rate = registry.rate.get(path)
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if rate is None:
                    self.wfile.write(body)
                    return
                step = max(1, int(rate / 20))
                try:
                    for i in range(0, len(body), step):
                        self.wfile.write(body[i : i + step])
                        self.wfile.flush()
                        time.sleep(step / rate)
                except OSError:
                    pass

            def _answer(self, status: int, ctype: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def blob(self, data: bytes) -> dict[str, Any]:
        digest = sha256(data)
        self.docs[f"/v2/evil/blobs/{digest}"] = ("application/octet-stream", data)
        return {"mediaType": OCI_CONFIG, "digest": digest, "size": len(data)}

    def image(
        self, config: Any = None, layers: list[bytes] | None = None, tag: str = "latest", **manifest_extra: Any
    ) -> str:
        """Serve an image (config doc, layer blobs) under ``evil:<tag>``; returns the reference."""
        cfg = self.blob(json.dumps(config if config is not None else {"config": {}}).encode())
        descs = []
        for data in layers or []:
            d = self.blob(data)
            descs.append({**d, "mediaType": OCI_LAYER + "+gzip"})
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg, "layers": descs, **manifest_extra}
        self.raw_manifest(tag, json.dumps(manifest).encode())
        return f"{self.host}/evil:{tag}"

    def raw_manifest(self, tag: str, body: bytes, ctype: str = OCI_MANIFEST) -> str:
        self.docs[f"/v2/evil/manifests/{tag}"] = (ctype, body)
        return f"{self.host}/evil:{tag}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hostile() -> Iterator[HostileRegistry]:
    h = HostileRegistry()
    yield h
    h.stop()


async def test_lying_manifest_config_size_is_refused_without_fetching(hostile: HostileRegistry, tmp_path: Path) -> None:
    """A manifest announcing a 300 MiB config: refused from the descriptor, the blob is never
    requested (today's fix for 300 MiB config -> 945 MiB RSS)."""
    ref = hostile.image()
    manifest = json.loads(hostile.docs["/v2/evil/manifests/latest"][1])
    manifest["config"]["size"] = 300 * MiB
    hostile.raw_manifest("latest", json.dumps(manifest).encode())
    m = _manager(tmp_path / "home", hostile.host)
    with pytest.raises(ImageTooLargeError, match="image config"):
        await m.pull(ref)
    assert not [h for h in hostile.hits if "/blobs/" in h]


async def test_slow_loris_blob_is_abandoned(hostile: HostileRegistry, tmp_path: Path) -> None:
    layer = layer_from_members([Member("a", data=os.urandom(4096))]).blob
    ref = hostile.image(layers=[layer])
    hostile.rate[f"/v2/evil/blobs/{sha256(layer)}"] = 20.0  # 20 bytes/s
    m = _manager(tmp_path / "home", hostile.host, min_speed=1000, speed_window=0.5)
    t0 = time.monotonic()
    with pytest.raises(RegistryTimeoutError, match="stalled"):
        await m.pull(ref)
    assert time.monotonic() - t0 < 10


async def test_silent_registry_and_overall_deadline(hostile: HostileRegistry, tmp_path: Path) -> None:
    layer = layer_from_members([Member("a", data=os.urandom(200_000))]).blob
    ref = hostile.image(layers=[layer])
    blob_path = f"/v2/evil/blobs/{sha256(layer)}"
    hostile.mute.add(blob_path)  # never answers: the headers deadline (the speed window) ends it
    m = _manager(tmp_path / "home", hostile.host, min_speed=1000, speed_window=0.5)
    t0 = time.monotonic()
    with pytest.raises(RegistryTimeoutError):
        await m.pull(ref)
    assert time.monotonic() - t0 < 10
    hostile.mute.clear()
    hostile.rate[blob_path] = 20_000.0  # fast enough for the speed rule, too slow for the deadline
    m.limits = dataclasses.replace(m.limits, pull_timeout=1.5)
    t0 = time.monotonic()
    with pytest.raises(RegistryTimeoutError, match="did not finish within"):
        await m.pull(ref)
    assert 1.4 < time.monotonic() - t0 < 5


HOSTILE_DOCS: dict[str, Callable[[HostileRegistry], str]] = {
    "deep-json": lambda h: h.raw_manifest("deep", b"[" * 200_000 + b"]" * 200_000),
    "platform-not-object": lambda h: h.raw_manifest(
        "plat",
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(b"x"), "size": 1, "platform": "linux"}],
            }
        ).encode(),
    ),
    "manifests-not-list": lambda h: h.raw_manifest(
        "nolist",
        json.dumps(
            {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": 7}
        ).encode(),
    ),
    "annotations-not-object": lambda h: h.raw_manifest(
        "ann",
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": sha256(b"c"), "size": 1, "annotations": ["x"]},
                "layers": [],
            }
        ).encode(),
    ),
    "size-bool": lambda h: h.raw_manifest(
        "bool",
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": sha256(b"c"), "size": True},
                "layers": [],
            }
        ).encode(),
    ),
    "too-many-layers": lambda h: h.raw_manifest(
        "layers",
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": sha256(b"c"), "size": 1},
                "layers": [{"mediaType": OCI_LAYER, "digest": sha256(b"%d" % i), "size": 1} for i in range(1000)],
            }
        ).encode(),
    ),
    "config-not-object": lambda h: h.image(config={"config": "sh"}, tag="cfg"),
    "cmd-not-list": lambda h: h.image(config={"config": {"Cmd": "sh", "Labels": []}}, tag="cmd"),
    "ports-not-object": lambda h: h.image(config={"config": {"ExposedPorts": ["80"]}}, tag="ports"),
    "config-a-list": lambda h: h.image(config=[1, 2], tag="list"),
    "diff-ids-not-strings": lambda h: h.image(
        config={"rootfs": {"type": "layers", "diff_ids": [1]}},
        layers=[layer_from_members([Member("a")]).blob],
        tag="diff",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_DOCS))
async def test_hostile_documents_give_typed_errors(hostile: HostileRegistry, tmp_path: Path, case: str) -> None:
    ref = HOSTILE_DOCS[case](hostile)
    m = _manager(tmp_path / "home", hostile.host)
    with pytest.raises(BoxliteError) as ei:  # never a bare ValueError/AttributeError/RecursionError
        await m.resolve(ref)
    assert isinstance(ei.value, (ParseError, ImageTooLargeError)), repr(ei.value)


def test_limits_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOXLITE_PULL_TIMEOUT", "90")
    monkeypatch.setenv("BOXLITE_IMAGE_MAX_DOCUMENT_BYTES", "1048576")
    lim = ImageLimits.from_env()
    assert lim.pull_timeout == 90.0 and lim.max_document == MiB and lim.max_ratio == 100.0
    monkeypatch.setenv("BOXLITE_IMAGE_MAX_RATIO", "lots")
    with pytest.raises(boxlite.errors.ConfigError):
        ImageLimits.from_env()
