"""Layer extraction: formats, ownership (unshifted), whiteouts, links, and hostile layers."""

from __future__ import annotations

import os
import random
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from tests.support.images import Layer, Member, layer_from_members

from boxlite.errors import DigestMismatchError, ImageError, UnsafeLayerError
from boxlite.images.fileattrs import host_id
from boxlite.images.unpack import unpack_layer

D, R, L, S, C, B, F = (
    tarfile.DIRTYPE,
    tarfile.REGTYPE,
    tarfile.LNKTYPE,
    tarfile.SYMTYPE,
    tarfile.CHRTYPE,
    tarfile.BLKTYPE,
    tarfile.FIFOTYPE,
)


def _unpack(tmp: Path, layer: Layer, check_diff: bool = True) -> Path:
    blob = tmp / "blob"
    blob.write_bytes(layer.blob)
    dest = tmp / "root"
    dest.mkdir()
    unpack_layer(blob, dest, layer.diff_id if check_diff else None)
    return dest


def test_host_id_keeps_image_ids_boxes_can_map() -> None:
    assert host_id(0) == 0
    assert host_id(1000) == 1000
    assert host_id(65535) == 65535
    assert host_id(65536) == 65534
    assert host_id(10**6) == 65534


@pytest.mark.parametrize("compression", ["gzip", "zstd", None])
def test_formats_and_metadata(tmp_path: Path, compression: str | None) -> None:
    layer = layer_from_members(
        [
            Member("./", D, mode=0o755),
            Member("./etc/", D, mode=0o755),
            Member("./etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n", mode=0o644),
            Member("usr/bin/tool", data=b"#!/bin/sh\n", mode=0o4755, uid=0, gid=0),
            Member("home/user/", D, mode=0o700, uid=1000, gid=1000),
            Member("home/user/big-id", data=b"x", uid=70000, gid=99999),
            Member("tmp/", D, mode=0o1777),
            Member("bin/sh", S, linkname="/usr/bin/tool"),
            Member("usr/bin/tool2", L, linkname="usr/bin/tool"),
            Member("dev/null", C, mode=0o666, devmajor=1, devminor=3),
            Member("dev/loop0", B, mode=0o660, devmajor=7, devminor=0, gid=6),
            Member("run/fifo", F, mode=0o600),
            Member(
                "file-with-xattr",
                data=b"x",
                pax={"SCHILY.xattr.user.test": "hello", "SCHILY.xattr.trusted.overlay.opaque": "y"},
            ),
        ],
        compression,
    )
    root = _unpack(tmp_path, layer)
    assert (root / "etc/passwd").read_bytes() == b"root:x:0:0::/root:/bin/sh\n"
    st = os.lstat(root / "usr/bin/tool")
    assert stat.S_IMODE(st.st_mode) == 0o4755 and (st.st_uid, st.st_gid) == (0, 0)
    assert os.lstat(root / "home/user").st_uid == 1000
    assert stat.S_IMODE(os.lstat(root / "home/user").st_mode) == 0o700
    st = os.lstat(root / "home/user/big-id")
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    assert stat.S_IMODE(os.lstat(root / "tmp").st_mode) == 0o1777
    assert os.readlink(root / "bin/sh") == "/usr/bin/tool"
    assert os.lstat(root / "bin/sh").st_uid == 0
    assert os.lstat(root / "usr/bin/tool2").st_ino == st_ino(root / "usr/bin/tool")
    # device nodes are never created on the host (the engines give the box its own /dev)
    assert not os.path.lexists(root / "dev/null") and not os.path.lexists(root / "dev/loop0")
    assert stat.S_ISFIFO(os.lstat(root / "run/fifo").st_mode)
    assert os.lstat(root).st_uid == 0
    assert os.lstat(root / "usr").st_uid == 0  # implicit parent dir
    try:
        assert os.getxattr(root / "file-with-xattr", "user.test") == b"hello"
    except OSError:
        pass  # filesystem without user xattrs
    with pytest.raises(OSError):
        os.getxattr(root / "file-with-xattr", "trusted.overlay.opaque")
    assert os.lstat(root / "etc/passwd").st_mtime == 1700000000


def st_ino(p: Path) -> int:
    return os.lstat(p).st_ino


def test_whiteouts_become_overlay_form(tmp_path: Path) -> None:
    layer = layer_from_members(
        [
            Member("etc/", D, mode=0o755),
            Member("etc/.wh.motd"),
            Member("var/lib/.wh..wh..opq"),
            Member("var/lib/keep", data=b"new"),
            Member(".wh..wh.plnk/", D),
        ]
    )
    root = _unpack(tmp_path, layer)
    st = os.lstat(root / "etc/motd")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert not (root / "etc/.wh.motd").exists()
    assert os.getxattr(root / "var/lib", "trusted.overlay.opaque") == b"y"
    assert not (root / "var/lib/.wh..wh..opq").exists()
    assert not (root / ".wh..wh.plnk").exists()


def test_whiteouts_work_in_overlayfs(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    lower = _unpack(
        tmp_path / "a",
        layer_from_members(
            [Member("etc/motd", data=b"hello"), Member("etc/keep", data=b"k"), Member("var/lib/old", data=b"o")]
        ),
    )
    upper = _unpack(
        tmp_path / "b",
        layer_from_members([Member("etc/.wh.motd"), Member("var/lib/.wh..wh..opq"), Member("var/lib/new", data=b"n")]),
    )
    merged = tmp_path / "m"
    merged.mkdir()
    script = (
        f"mount -t overlay overlay -o lowerdir={upper}:{lower} {merged} && "
        f"ls {merged}/etc && echo -- && ls {merged}/var/lib"
    )
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr  # overlayfs is required by the namespace engine
    assert r.stdout.split() == ["keep", "--", "new"]


def test_dir_recreated_after_whiteout_is_opaque(tmp_path: Path) -> None:
    root = _unpack(
        tmp_path, layer_from_members([Member(".wh.etc"), Member("etc/", D, mode=0o755), Member("etc/new", data=b"n")])
    )
    assert os.getxattr(root / "etc", "trusted.overlay.opaque") == b"y"
    assert (root / "etc/new").read_bytes() == b"n"


def test_later_entries_replace_earlier(tmp_path: Path) -> None:
    root = _unpack(
        tmp_path,
        layer_from_members(
            [
                Member("a", data=b"first"),
                Member("a", data=b"second"),
                Member("d/", D),
                Member("d/x", data=b"x"),
                Member("d", data=b"now a file"),
                Member("s", S, linkname="/etc/passwd"),
                Member("s", data=b"regular now"),
            ]
        ),
    )
    assert (root / "a").read_bytes() == b"second"
    assert (root / "d").read_bytes() == b"now a file"
    assert (root / "s").read_bytes() == b"regular now" and not (root / "s").is_symlink()


def test_diff_id_is_verified(tmp_path: Path) -> None:
    layer = layer_from_members([Member("a", data=b"x")])
    layer.diff_id = "sha256:" + "0" * 64
    with pytest.raises(DigestMismatchError):
        _unpack(tmp_path, layer)


@pytest.mark.parametrize("compression", ["gzip", "zstd", None])
def test_corrupt_layers_are_image_errors(tmp_path: Path, compression: str | None) -> None:
    good = layer_from_members([Member(f"f{i}", data=os.urandom(2000)) for i in range(20)], compression)
    blob = bytearray(good.blob)
    for i in range(len(blob) // 3, len(blob) // 3 + 64):
        blob[i] ^= 0x55
    with pytest.raises(ImageError):
        _unpack(tmp_path, Layer(bytes(blob), good.media_type, good.diff_id))
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(ImageError):
        _unpack(other, Layer(b"\x1f\x8b" + b"not gzip at all" * 10, "x", "sha256:0"), False)


# -- hostile layers -------------------------------------------------------------------------
def hostile(out: Path) -> dict[str, list[Member]]:
    """Layers trying to write into ``out`` (which sits next to the layer dir: ``../OUTSIDE``)."""
    rel = "../OUTSIDE"
    return {
        "dotdot": [Member("../OUTSIDE/escape", data=b"pwned")],
        "dotdot-nested": [Member("a/../../OUTSIDE/escape", data=b"pwned")],
        "absolute": [Member(f"{out}/escape", data=b"pwned")],
        "symlink-then-write": [Member("link", S, linkname=rel), Member("link/escape", data=b"pwned")],
        "symlink-abs-then-write": [Member("link", S, linkname=str(out)), Member("link/escape", data=b"pwned")],
        "symlink-chain": [
            Member("a", S, linkname="b"),
            Member("b", S, linkname=rel),
            Member("a/escape", data=b"pwned"),
        ],
        "dir-replaced-by-symlink": [
            Member("d/", D),
            Member("d/ok", data=b"ok"),
            Member("d", S, linkname=str(out)),
            Member("d/escape", data=b"pwned"),
        ],
        "hardlink-dotdot": [Member("hl", L, linkname=f"{rel}/sentinel")],
        "hardlink-absolute": [Member("hl", L, linkname=f"{out}/sentinel")],
        "hardlink-through-symlink": [Member("link", S, linkname=rel), Member("hl", L, linkname="link/sentinel")],
        "hardlink-placed-through-symlink": [
            Member("link", S, linkname=rel),
            Member("f", data=b"x"),
            Member("link/escape", L, linkname="f"),
        ],
        "whiteout-through-symlink": [Member("link", S, linkname=rel), Member("link/.wh.sentinel")],
        "opaque-through-symlink": [Member("link", S, linkname=rel), Member("link/.wh..wh..opq")],
        "device-through-symlink": [Member("link", S, linkname=rel), Member("link/dev", C, devmajor=1, devminor=3)],
        "dir-through-symlink": [Member("link", S, linkname=rel), Member("link/newdir/", D)],
        "whiteout-of-dotdot": [Member(".wh..."), Member("escape", data=b"x")],
    }


CASES = sorted(hostile(Path("/x")))


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the layer dir (reachable as ../OUTSIDE) with a sentinel file."""
    out = tmp_path / "OUTSIDE"
    out.mkdir()
    (out / "sentinel").write_text("original")
    return out


def _snapshot(p: Path) -> list[tuple[str, int, int, bytes]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(p):
        for n in sorted(dirnames + filenames):
            full = os.path.join(dirpath, n)
            st = os.lstat(full)
            data = Path(full).read_bytes() if stat.S_ISREG(st.st_mode) else b""
            out.append((full, st.st_mode, st.st_nlink, data))
    return sorted(out)


@pytest.mark.parametrize("case", CASES)
def test_hostile_layer_is_refused(tmp_path: Path, outside: Path, case: str) -> None:
    before = _snapshot(outside)
    with pytest.raises(UnsafeLayerError):
        _unpack(tmp_path, layer_from_members(hostile(outside)[case]))  # layer dir: tmp/root
    assert _snapshot(outside) == before
    assert not (tmp_path / "escape").exists()


async def test_hostile_layer_leaves_no_layer_dir(tmp_path: Path, outside: Path) -> None:
    """Through the manager: the work dir is discarded and nothing is committed."""
    from tests.support.images import image_config, write_oci_layout

    from boxlite.images import ImageManager

    layer = layer_from_members([Member("link", S, linkname=str(outside)), Member("link/escape", data=b"pwned")])
    layout = write_oci_layout(tmp_path / "layout", [layer], image_config([layer]))
    m = ImageManager(tmp_path / "home")
    with pytest.raises(UnsafeLayerError):
        await m.resolve(rootfs_path=str(layout))
    assert list(m.store.layers.iterdir()) == []
    assert not [p for p in m.store.tmp.iterdir() if p.name.startswith("layer-")]
    assert not (outside / "escape").exists()


def test_symlink_replacing_file_is_safe(tmp_path: Path, outside: Path) -> None:
    """A regular file written over a symlink replaces the link, never follows it."""
    root = tmp_path / "l"
    root.mkdir()
    dest = _unpack(
        root,
        layer_from_members(
            [
                Member("f", S, linkname=str(outside / "sentinel")),
                Member("f", data=b"inside"),
                Member("h", S, linkname=str(outside / "sentinel")),
                Member("h2", L, linkname="h"),  # hard link to the symlink itself
                Member("h2", data=b"also inside"),
            ]
        ),
    )
    assert (outside / "sentinel").read_text() == "original"
    assert (dest / "f").read_bytes() == b"inside"
    assert os.readlink(dest / "h") == str(outside / "sentinel")


def _random_layer(rng: random.Random, outside: Path) -> list[Member]:
    comps = ["a", "b", "c", "..", ".", "link", "OUTSIDE", ".wh.a", ".wh..wh..opq"]
    targets = ["../OUTSIDE", str(outside), "a", "a/b", "/", "..", "link", "../../OUTSIDE/sentinel"]

    def name() -> str:
        return "/".join(rng.choice(comps) for _ in range(rng.randint(1, 3)))

    out = []
    for _ in range(rng.randint(1, 8)):
        kind = rng.choice([R, R, D, S, S, L])
        m = Member(name(), kind, data=b"pwned" if kind == R else b"")
        if kind == S:
            m.linkname = rng.choice(targets)
        elif kind == L:
            m.linkname = rng.choice([name(), "../OUTSIDE/sentinel", f"{outside}/sentinel"])
        out.append(m)
    return out


def test_random_hostile_layers_never_escape(tmp_path: Path, outside: Path) -> None:
    rng = random.Random(1234)
    before = _snapshot(outside)
    outcomes: dict[str, int] = {}
    for i in range(300):
        work = tmp_path / f"w{i}"
        work.mkdir()
        try:
            _unpack(work, layer_from_members(_random_layer(rng, outside)))
            outcome = "ok"
        except UnsafeLayerError:
            outcome = "unsafe"
        except ImageError:
            outcome = "error"  # e.g. hard link to a missing member
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        assert sorted(p.name for p in work.iterdir()) == ["blob", "root"]
        assert _snapshot(outside) == before, f"escape in iteration {i}"
        assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("w")) == ["OUTSIDE"]
    assert outcomes.get("ok") and outcomes.get("unsafe")
