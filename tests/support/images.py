"""Build small test images locally (busybox rootfs, Debian python rootfs, OCI layouts)."""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUSYBOX = Path("/bin/busybox")

APPLETS = [
    "sh",
    "ash",
    "ls",
    "cat",
    "echo",
    "sleep",
    "id",
    "hostname",
    "mount",
    "umount",
    "env",
    "pwd",
    "head",
    "tail",
    "dd",
    "wc",
    "kill",
    "ps",
    "mkdir",
    "rm",
    "rmdir",
    "touch",
    "true",
    "false",
    "yes",
    "printf",
    "ln",
    "stat",
    "tar",
    "grep",
    "seq",
    "chmod",
    "chown",
    "whoami",
    "uname",
    "date",
    "sort",
    "uniq",
    "cut",
    "tr",
    "sed",
    "awk",
    "find",
    "xargs",
    "cp",
    "mv",
    "readlink",
    "realpath",
    "basename",
    "dirname",
    "du",
    "df",
    "free",
    "top",
    "test",
    "[",
    "expr",
    "which",
    "nproc",
    "sync",
    "tee",
    "gzip",
    "gunzip",
    "vi",
    "diff",
    "md5sum",
    "sha256sum",
    "mktemp",
    "ip",
    "ifconfig",
    "nc",
    "wget",
    "timeout",
    "nice",
    "hexdump",
    "od",
    "usleep",
    "httpd",
]

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "user:x:1000:1000:user:/home/user:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n"


def build_busybox_rootfs(dest: Path) -> Path:
    """Create a minimal busybox root filesystem in ``dest`` (unshifted: files owned by root).

    Contains ``/bin/busybox`` (static) plus applet symlinks, ``/etc/passwd`` and ``/etc/group``
    (root, user 1000, nobody), ``/tmp`` (1777), ``/home/user`` (owned 1000), ``/root`` and
    empty ``/proc``, ``/dev``, ``/sys`` mount points. Returns ``dest``.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for d in ("bin", "sbin", "usr/bin", "etc", "root", "proc", "dev", "sys", "run", "var", "home"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    bb = dest / "bin" / "busybox"
    shutil.copyfile(BUSYBOX, bb)
    os.chmod(bb, 0o755)
    available = set(_busybox_applets())
    for name in APPLETS:
        if available and name not in available:
            continue
        link = dest / "bin" / name
        if not link.exists() and not link.is_symlink():
            os.symlink("busybox", link)
    (dest / "etc" / "passwd").write_text(PASSWD)
    (dest / "etc" / "group").write_text(GROUP)
    (dest / "etc" / "hostname").write_text("box\n")
    (dest / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    tmp = dest / "tmp"
    tmp.mkdir(exist_ok=True)
    os.chmod(tmp, 0o1777)
    os.chmod(dest / "root", 0o700)
    home = dest / "home" / "user"
    home.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(home, 1000, 1000)
    return dest


def _busybox_applets() -> list[str]:
    try:
        out = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return []
    return out.stdout.split()


def is_executable(path: Path) -> bool:
    """True when ``path`` is a regular file with an execute bit."""
    st = path.stat()
    return stat.S_ISREG(st.st_mode) and bool(st.st_mode & 0o111)


# --------------------------------------------------------------------------------------------
# OCI layout building (layers from dirs or crafted members, configs, manifests, indexes)
# --------------------------------------------------------------------------------------------

CACHE = Path(os.environ.get("BOXLITE_TEST_CACHE", "/var/cache/boxlite-test"))
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def host_arch() -> str:
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


@dataclass
class Layer:
    """A layer blob as stored in a layout/registry."""

    blob: bytes
    media_type: str
    diff_id: str


def compress(tar: bytes, compression: str | None = "gzip") -> Layer:
    if compression == "gzip":
        return Layer(gzip.compress(tar, 6, mtime=0), OCI_LAYER + "+gzip", sha256(tar))
    if compression == "zstd":
        import zstandard

        return Layer(zstandard.ZstdCompressor().compress(tar), OCI_LAYER + "+zstd", sha256(tar))
    return Layer(tar, OCI_LAYER, sha256(tar))


def layer_from_dir(root: Path, compression: str | None = "gzip") -> Layer:
    """Tar ``root``'s contents (names relative, numeric owners kept)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for entry in sorted(os.listdir(root)):
            tf.add(root / entry, arcname=entry, recursive=True)
    return compress(buf.getvalue(), compression)


@dataclass
class Member:
    """One crafted tar member: name, type and payload."""

    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    linkname: str = ""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    devmajor: int = 0
    devminor: int = 0
    pax: dict[str, str] = field(default_factory=dict)


def tar_members(members: list[Member]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for m in members:
            ti = tarfile.TarInfo(m.name)
            ti.type = m.type
            ti.mode = m.mode
            ti.uid, ti.gid = m.uid, m.gid
            ti.linkname = m.linkname
            ti.devmajor, ti.devminor = m.devmajor, m.devminor
            ti.mtime = 1700000000
            ti.pax_headers = dict(m.pax)
            if m.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
                ti.size = len(m.data)
                tf.addfile(ti, io.BytesIO(m.data))
            else:
                tf.addfile(ti)
    return buf.getvalue()


def layer_from_members(members: list[Member], compression: str | None = "gzip") -> Layer:
    return compress(tar_members(members), compression)


def image_config(layers: list[Layer], cmd: list[str] | None = None, **extra: object) -> dict[str, object]:
    cfg: dict[str, object] = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}
    if cmd is not None:
        cfg["Cmd"] = cmd
    cfg.update(extra)
    return {
        "created": "2024-01-01T00:00:00Z",
        "architecture": host_arch(),
        "os": "linux",
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [lay.diff_id for lay in layers]},
    }


def _put(dest: Path, data: bytes) -> str:
    digest = sha256(data)
    p = dest / "blobs" / "sha256" / digest.split(":")[1]
    p.parent.mkdir(parents=True, exist_ok=True)
    if not p.exists():
        p.write_bytes(data)
    return digest


def write_manifest(dest: Path, layers: list[Layer], config: dict[str, object]) -> dict[str, object]:
    """Write config + layers + manifest blobs; return the manifest's descriptor."""
    cfg = json.dumps(config).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": _put(dest, cfg), "size": len(cfg)},
        "layers": [
            {"mediaType": lay.media_type, "digest": _put(dest, lay.blob), "size": len(lay.blob)} for lay in layers
        ],
    }
    body = json.dumps(manifest).encode()
    return {"mediaType": OCI_MANIFEST, "digest": _put(dest, body), "size": len(body)}


def write_oci_layout(
    dest: Path,
    layers: list[Layer],
    config: dict[str, object] | None = None,
    tag: str = "latest",
    platforms: list[tuple[str, str, str | None]] | None = None,
) -> Path:
    """Write (or add ``tag`` to) an OCI layout at ``dest``.

    With ``platforms`` the tag points at an image index with one manifest per platform (all
    with the same layers; the config's architecture follows the platform).
    """
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    config = config or image_config(layers)
    if platforms:
        entries = []
        for os_, arch, variant in platforms:
            cfg = {**config, "os": os_, "architecture": arch}
            desc = write_manifest(dest, layers, cfg)
            plat = {"os": os_, "architecture": arch, **({"variant": variant} if variant else {})}
            entries.append({**desc, "platform": plat})
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
        top = {"mediaType": OCI_INDEX, "digest": _put(dest, body), "size": len(body)}
    else:
        top = write_manifest(dest, layers, config)
    top["annotations"] = {"org.opencontainers.image.ref.name": tag}
    index_path = dest / "index.json"
    index: dict[str, Any] = (
        json.loads(index_path.read_text())
        if index_path.exists()
        else {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    )
    index["manifests"] = [
        m for m in index["manifests"] if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") != tag
    ] + [top]
    index_path.write_text(json.dumps(index))
    return dest


def _cached_layout(name: str, build: Callable[[Path], None], version: str) -> Path:
    """Build a layout once under the cache dir (rebuilt when ``version`` changes)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    dest = CACHE / "layouts" / name
    stamp = dest / ".built"
    if stamp.exists() and stamp.read_text() == version:
        return dest
    with _lock(CACHE / f"{name}.lock"):
        if stamp.exists() and stamp.read_text() == version:
            return dest
        shutil.rmtree(dest, ignore_errors=True)
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        build(tmp)
        (tmp / ".built").write_text(version)
        tmp.rename(dest)
    return dest


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)  # the first build on a fresh machine makes the cache
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def busybox_layout() -> Path:
    """OCI layout (tag ``latest``) of a one-layer busybox image, cached."""

    def build(dest: Path) -> None:
        root = dest.with_name("busybox-rootfs")
        shutil.rmtree(root, ignore_errors=True)
        build_busybox_rootfs(root)
        layer = layer_from_dir(root)
        shutil.rmtree(root)
        write_oci_layout(dest, [layer], image_config([layer], cmd=["/bin/sh"]))

    return _cached_layout("busybox", build, "1")


def python_rootfs() -> Path:
    """Debian python3.11 + busybox-static rootfs, cached under the cache dir."""
    from boxlite.images.debian import DEFAULT_PACKAGES, build_debian_rootfs

    dest = CACHE / "python-rootfs"
    stamp = CACHE / "python-rootfs.built"
    version = ",".join(DEFAULT_PACKAGES)
    if stamp.exists() and stamp.read_text() == version:
        return dest
    with _lock(CACHE / "python-rootfs.lock"):
        if not stamp.exists() or stamp.read_text() != version:
            shutil.rmtree(dest, ignore_errors=True)
            build_debian_rootfs(dest, list(DEFAULT_PACKAGES), CACHE)
            stamp.write_text(version)
    return dest


def python_layout() -> Path:
    """Two-layer python image: Debian python rootfs + a small app layer, cached."""

    def build(dest: Path) -> None:
        base = layer_from_dir(python_rootfs())
        app = layer_from_members(
            [
                Member("app/", tarfile.DIRTYPE, mode=0o755),
                Member("app/hello.py", data=b"print('hello from boxlite')\n"),
            ]
        )
        write_oci_layout(
            dest, [base, app], image_config([base, app], cmd=["python3", "/app/hello.py"], WorkingDir="/app")
        )

    from boxlite.images.debian import DEFAULT_PACKAGES

    return _cached_layout("python", build, "2:" + ",".join(DEFAULT_PACKAGES))
