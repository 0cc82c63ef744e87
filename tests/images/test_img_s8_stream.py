"""Unpacking a layer while it downloads, and the threads that write new files.

A layer is extracted from its download under way (a :class:`BlobTail` over the partial file), but
published only once the blob's digest and the layer's diff_id are verified; new small files are
written by helper threads, in an order that must give the same tree as one thread.
"""

from __future__ import annotations

import os
import stat
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.images.conftest import Registry
from tests.support.images import Layer, Member, image_config, layer_from_members, sha256, write_oci_layout

import boxlite.images.unpack as unpack_mod
from boxlite.errors import DigestMismatchError, ImageError, UnsafeLayerError
from boxlite.images import ImageManager, ImageRegistry
from boxlite.images.client import BlobTail, TailAborted

D, R, L, S = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.LNKTYPE, tarfile.SYMTYPE
MM = Callable[..., ImageManager]


# -- BlobTail ---------------------------------------------------------------------------
def _tail(tmp_path: Path, data: bytes) -> tuple[BlobTail, Path]:
    path = tmp_path / "blob.partial"
    path.write_bytes(data)
    tail = BlobTail()
    tail.open(path)
    return tail, path


def test_tail_returns_only_written_bytes_and_ends_only_when_verified(tmp_path: Path) -> None:
    tail, _ = _tail(tmp_path, b"0123456789")
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.extend(iter(lambda: tail.read(4), b"")))
    reader.start()
    tail.advance(3)
    reader.join(0.3)
    assert reader.is_alive()  # waits for more: the end comes only with finish()
    assert b"".join(got) == b"012"
    tail.advance(10)
    reader.join(0.3)
    assert reader.is_alive()
    tail.finish(10)
    reader.join(5)
    assert not reader.is_alive()
    assert b"".join(got) == b"0123456789"
    tail.abort()  # after the end: no effect
    assert tail.read() == b""
    tail.close()


def test_tail_abort_is_final_and_fails_the_reader(tmp_path: Path) -> None:
    tail, _ = _tail(tmp_path, b"abcdef")
    tail.advance(6)
    assert tail.read(2) == b"ab"
    errors: list[BaseException] = []

    def read_all() -> None:
        try:
            while tail.read(100):
                pass
        except TailAborted as e:
            errors.append(e)

    reader = threading.Thread(target=read_all)
    reader.start()
    reader.join(0.3)
    tail.abort()  # e.g. the download truncates what it wrote: the reader must not see the end
    reader.join(5)
    assert len(errors) == 1
    tail.finish(6)  # a verified end after an abort does not revive it
    with pytest.raises(TailAborted):
        tail.read()
    tail.close()


# -- unpacking while downloading ----------------------------------------------------------
def _record_unpacks(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Which unpack_layer calls read a download under way (True) or a stored blob (False)."""
    calls: list[bool] = []
    real = unpack_mod.unpack_layer

    def spy(*a: object, **kw: object) -> object:
        calls.append(isinstance(kw.get("source"), BlobTail))
        return real(*a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(unpack_mod, "unpack_layer", spy)
    return calls


async def test_resolve_unpacks_layers_as_they_download(
    registry: Registry, make_manager: MM, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _record_unpacks(monkeypatch)
    m = make_manager(registry.config())
    prepared = await m.resolve(registry.busybox)
    assert calls == [True] * len(prepared.layers)
    assert (prepared.layers[0] / "bin/busybox").is_file()
    assert not list(m.store.tmp.iterdir())  # no work dir, no partial left
    # the store is as a plain pull leaves it: the blobs, the layers with their usage
    hex_id = prepared.layers[0].parent.name
    assert m.store.has_blob("sha256:" + hex_id)
    assert m.store.layer_usage(hex_id)[1] > 0
    again = await m.resolve(registry.busybox)
    assert again.layers == prepared.layers and len(calls) == len(prepared.layers)


async def test_pull_leaves_the_image_unpacked(
    registry: Registry, make_manager: MM, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _record_unpacks(monkeypatch)
    m = make_manager(registry.config())
    await m.pull(registry.busybox)
    assert calls == [True]
    assert len(list(m.store.layers.iterdir())) == 1
    prepared = await m.resolve(registry.busybox)  # nothing left to unpack
    assert calls == [True] and (prepared.layers[0] / "bin/busybox").is_file()


async def test_layer_with_wrong_diff_id_is_never_published(
    registry: Registry, make_manager: MM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The streamed unpack checks the diff_id before publishing; the fallback refuses it too."""
    layer = layer_from_members([Member("etc/", D, mode=0o755), Member("etc/motd", data=b"hello\n")])
    cfg = image_config([layer])
    cfg["rootfs"] = {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}
    ref = registry.server.push_layout(write_oci_layout(tmp_path / "layout", [layer], cfg), "s8-bad-diffid")
    calls = _record_unpacks(monkeypatch)
    m = make_manager(registry.config())
    with pytest.raises(DigestMismatchError):
        await m.resolve(ref)
    assert calls == [True, False]  # streamed and refused, then unpacked from the stored blob and refused
    assert not list(m.store.layers.iterdir())
    assert not list(m.store.tmp.iterdir())


async def test_hostile_layer_streamed_is_refused_like_a_stored_one(
    registry: Registry, make_manager: MM, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    layer = layer_from_members([Member("link", S, linkname=str(outside)), Member("link/planted", data=b"pwned")])
    ref = registry.server.push_layout(write_oci_layout(tmp_path / "layout", [layer]), "s8-hostile")
    m = make_manager(registry.config())
    await m.pull(ref)  # the download itself is fine: the pull succeeds, as before, unpacking nothing
    assert not list(m.store.layers.iterdir())
    with pytest.raises(UnsafeLayerError):
        await m.resolve(ref)
    assert not (outside / "planted").exists()
    assert not list(m.store.layers.iterdir())
    assert not list(m.store.tmp.iterdir())


async def test_corrupt_download_discards_the_streamed_unpack(
    registry: Registry, make_manager: MM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blob that fails its digest once is downloaded again from zero: what was unpacked from
    the bad bytes is thrown away, and the layer comes from the verified blob."""
    from tests.support.registry_proxy import FaultProxy

    proxy = FaultProxy(registry.host)
    try:
        proxy.add("corrupt", r"/blobs/sha256:", times=1)
        calls = _record_unpacks(monkeypatch)
        m = make_manager(ImageRegistry(proxy.host, transport="http"))
        prepared = await m.resolve(f"{proxy.host}/busybox:latest")
    finally:
        proxy.stop()
    clean = await make_manager(registry.config(), home=m.home.parent / "clean").resolve(registry.busybox)
    assert (prepared.layers[0] / "bin/busybox").read_bytes() == (clean.layers[0] / "bin/busybox").read_bytes()
    assert calls.count(False) <= 1  # the corrupted layer (if the config took the fault) falls back once
    assert not list(m.store.tmp.iterdir())


# -- writer threads ----------------------------------------------------------------------
def _tree(root: Path) -> list[tuple[str, int, int, int, bytes, str]]:
    out = []
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in sorted(dirnames + filenames):
            full = os.path.join(dirpath, n)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            data = Path(full).read_bytes() if stat.S_ISREG(st.st_mode) else b""
            link = os.readlink(full) if stat.S_ISLNK(st.st_mode) else ""
            same = inodes.setdefault(st.st_ino, rel) if st.st_nlink > 1 else ""
            # implicit parents and whiteouts get the time they were made; members their header's
            mtime = st.st_mtime_ns if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode) else 0
            out.append((rel, st.st_mode, st.st_uid, mtime, data, link + same))
    return sorted(out)


HAZARDS = {
    "many small files": [Member("d/", D, mode=0o755)] + [Member(f"d/f{i}", data=b"x" * i) for i in range(300)],
    "file replaced by a dir": [Member("a", data=b"file"), Member("a/", D, mode=0o700), Member("a/b", data=b"in")],
    "dir with files replaced by a file": [Member(f"d/f{i}", data=b"y") for i in range(50)] + [Member("d", data=b"f")],
    "dir with files replaced by a symlink": [Member(f"d/f{i}", data=b"y") for i in range(50)]
    + [Member("d", S, linkname="elsewhere")],
    "file replaced by a symlink": [Member("f", data=b"1"), Member("f", S, linkname="target")],
    "same file twice": [Member("f", data=b"first", mode=0o600), Member("f", data=b"second", mode=0o640)],
    "hard link to a file just written": [Member("f", data=b"linked", uid=1000), Member("h", L, linkname="f")],
    "whiteout of a dir with files": [Member(f"d/f{i}", data=b"z") for i in range(40)] + [Member(".wh.d")],
    "opaque dir": [Member("d/f", data=b"1"), Member("d/.wh..wh..opq"), Member("d/g", data=b"2")],
    "big and small files": [
        Member("big", data=os.urandom(3 << 20)),
        Member("small", data=b"s"),
        Member("zeros", data=bytes(1 << 20)),
        Member("after", data=b"a"),
    ],
    "setuid and owners": [Member("bin/su", data=b"#!", mode=0o4755), Member("home/u/x", data=b"u", uid=1000, gid=1000)],
}
HOSTILE = {
    "through a file just written": [Member("f", data=b"1"), Member("f/child", data=b"2")],
    "through a symlink replacing a file": [Member("f", data=b"1"), Member("f", S, linkname="/etc"), Member("f/x")],
}


def _layer_blob(tmp_path: Path, members: list[Member]) -> tuple[Layer, Path]:
    """A gzip layer of ``members`` and its blob written to ``tmp_path / "blob"``."""
    layer = layer_from_members(members)
    blob = tmp_path / "blob"
    blob.write_bytes(layer.blob)
    return layer, blob


@pytest.mark.parametrize("case", sorted(HAZARDS))
def test_writer_threads_give_the_same_tree_as_one_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    layer, blob = _layer_blob(tmp_path, HAZARDS[case])
    trees = []
    for writers in (0, 1, 3):  # one thread alone, the default, and writers racing each other
        monkeypatch.setattr(unpack_mod, "_WRITERS", writers)
        dest = tmp_path / f"root-{writers}"
        dest.mkdir()
        unpack_mod.unpack_layer(blob, dest, layer.diff_id)
        trees.append(_tree(dest))
    assert trees[0] == trees[1] == trees[2]


def test_directory_times_are_set_after_the_writers(tmp_path: Path) -> None:
    members = [Member("d/", D, mode=0o755)] + [Member(f"d/f{i}", data=b"x") for i in range(100)]
    layer, blob = _layer_blob(tmp_path, members)
    (tmp_path / "root").mkdir()
    unpack_mod.unpack_layer(blob, tmp_path / "root", layer.diff_id)
    assert (tmp_path / "root/d").stat().st_mtime == 1700000000  # the header's, not the last write's
    assert len(os.listdir(tmp_path / "root/d")) == 100


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_writer_threads_refuse_what_one_thread_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    layer, blob = _layer_blob(tmp_path, HOSTILE[case])
    for writers in (0, 1, 3):
        monkeypatch.setattr(unpack_mod, "_WRITERS", writers)
        dest = tmp_path / f"root-{writers}"
        dest.mkdir()
        with pytest.raises(UnsafeLayerError):
            unpack_mod.unpack_layer(blob, dest, layer.diff_id)


def test_writer_error_reaches_the_extractor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure in a writer thread fails the layer (no file silently missing)."""
    layer, blob = _layer_blob(tmp_path, [Member(f"f{i}", data=b"d") for i in range(20)])
    real = unpack_mod.Extractor.write_new

    def failing(self: unpack_mod.Extractor, pfd: int, parts: tuple[str, ...], m: tarfile.TarInfo, data: bytes) -> None:
        if parts == ("f7",):
            raise OSError(5, "Input/output error")
        real(self, pfd, parts, m, data)

    monkeypatch.setattr(unpack_mod.Extractor, "write_new", failing)
    (tmp_path / "root").mkdir()
    with pytest.raises(ImageError, match="Input/output error"):
        unpack_mod.unpack_layer(blob, tmp_path / "root", layer.diff_id)
    assert not [t for t in threading.enumerate() if t.name.startswith("boxlite-unpack")]


def _inflaters() -> list[str]:
    try:
        import isal  # noqa: F401
    except ImportError:
        return ["zlib"]
    return ["zlib", "isal"]


@pytest.fixture(params=_inflaters())
def inflater(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run with stdlib zlib and, where installed, ISA-L's inflate (the one used then)."""
    import zlib

    if request.param == "zlib":
        monkeypatch.setattr(unpack_mod, "_inflate", zlib)
    else:
        from isal import isal_zlib

        monkeypatch.setattr(unpack_mod, "_inflate", isal_zlib)
    return str(request.param)


def _gz_layer(tmp_path: Path, blob_bytes: bytes) -> Path:
    blob = tmp_path / "blob"
    blob.write_bytes(blob_bytes)
    (tmp_path / "root").mkdir()
    return blob


def test_truncated_gzip_is_refused(tmp_path: Path, inflater: str) -> None:
    layer = layer_from_members([Member(f"f{i}", data=os.urandom(4000)) for i in range(10)])
    blob = _gz_layer(tmp_path, layer.blob[: len(layer.blob) // 2])
    with pytest.raises(ImageError):
        unpack_mod.unpack_layer(blob, tmp_path / "root")
    assert not [t for t in threading.enumerate() if t.name.startswith("boxlite-unpack")]


def test_gzip_with_a_bad_checksum_is_refused(tmp_path: Path, inflater: str) -> None:
    """Without a diff_id to check, the gzip trailer's CRC still catches a flipped byte."""
    layer = layer_from_members([Member("f", data=b"payload" * 1000)])
    bad = bytearray(layer.blob)
    bad[-6] ^= 0xFF  # in the CRC32 of the trailer
    blob = _gz_layer(tmp_path, bytes(bad))
    with pytest.raises(ImageError):
        unpack_mod.unpack_layer(blob, tmp_path / "root")


def test_garbage_after_the_gzip_stream_is_refused(tmp_path: Path, inflater: str) -> None:
    layer = layer_from_members([Member("f", data=b"x")])
    blob = _gz_layer(tmp_path, layer.blob + b"not gzip at all")
    with pytest.raises(ImageError):
        unpack_mod.unpack_layer(blob, tmp_path / "root")


def test_concatenated_gzip_members_are_one_stream(tmp_path: Path, inflater: str) -> None:
    import gzip

    tar = layer_from_members([Member("a", data=b"A" * 5000), Member("b", data=b"B")], None).blob
    blob = _gz_layer(tmp_path, gzip.compress(tar[:3000]) + gzip.compress(tar[3000:]))
    unpack_mod.unpack_layer(blob, tmp_path / "root", sha256(tar))
    assert (tmp_path / "root/a").read_bytes() == b"A" * 5000
    assert (tmp_path / "root/b").read_bytes() == b"B"


def test_gzip_bomb_after_the_tar_is_refused(tmp_path: Path, inflater: str) -> None:
    """Zeros after the tar's end still count against the layer's ratio limit as they inflate."""
    import zlib

    from boxlite.errors import ImageTooLargeError
    from boxlite.images.limits import ImageLimits

    tar = layer_from_members([Member("f", data=b"x")], None).blob
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    blob = _gz_layer(tmp_path, comp.compress(tar) + b"".join(comp.compress(zeros) for _ in range(64)) + comp.flush())
    with pytest.raises(ImageTooLargeError):
        unpack_mod.unpack_layer(blob, tmp_path / "root", limits=ImageLimits(ratio_floor=8 << 20))
    assert not [t for t in threading.enumerate() if t.name.startswith("boxlite-unpack")]
