"""Issue 18 items 2, 7, 9: copy_out cannot write outside its destination, plant privileges or
amplify host disk use, and bad archives raise typed errors.

Two attackers: a box (real boxes on every engine, through the honest agent's tar writer,
reshaping its tree between copies) and a hostile guest agent (crafted tar streams handed
straight to the host extractor), plus the same extractor run by Debian's own Python 3.11.2
(no ``tarfile`` extraction filters there).
"""

from __future__ import annotations

import asyncio
import io
import os
import stat
import subprocess
import tarfile
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

import boxlite
from boxlite.errors import ResourceExhaustedError, TimeoutError, UnsafeArchiveError
from boxlite.fsutil.dirfd import remove_tree
from boxlite.fsutil.extract import Limits, extract_archive
from support.hosttree import tree

SRC = Path(__file__).resolve().parents[2] / "src"
LONG = "d" * 247  # with 16 levels, real paths pass PATH_MAX: realpath() gives up, the kernel does not
STEPS = "abcdefghijklmnop"


# -- crafted archives (a hostile guest agent) ------------------------------------------------
Member = tuple[tarfile.TarInfo, bytes]


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **attrs: object) -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def archive(*members: Member) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def extract(data: bytes | Callable[[int], bytes], dest: Path, **kw: object) -> None:
    read = io.BytesIO(data).read if isinstance(data, bytes) else data
    extract_archive(read, str(dest), "top", **kw)  # type: ignore[arg-type]


def cve_2025_4517_chain() -> bytes:
    """A symlink chain that os.path.realpath() cannot resolve (its real path passes PATH_MAX),
    then a link through it to ``dest/..`` and a file written through that link."""
    members = [member("top", tarfile.DIRTYPE)]
    path = "top"
    for step in STEPS:
        members.append(member(f"{path}/{LONG}", tarfile.DIRTYPE))
        members.append(member(f"{path}/{step}", tarfile.SYMTYPE, linkname=LONG))
        path = f"{path}/{LONG}"
    members.append(member("top/" + "/".join(STEPS) + "/" + "l" * 254, tarfile.SYMTYPE, linkname="../" * 16))
    members.append(member("top/escape", tarfile.SYMTYPE, linkname="/".join(STEPS) + "/" + "l" * 254 + "/../.."))
    members.append(member("top/escape/ESCAPED_FILE", data=b"pwned\n"))
    return archive(*members)


def escaped(root: Path, dest: Path) -> list[str]:
    """Files named ESCAPED_FILE under ``root`` (and at /) that are not inside ``dest``."""
    home = str(root / "home")  # a runtime home under root holds the boxes' own files
    find = ["find", str(root), "-path", home, "-prune", "-o", "-name", "ESCAPED_FILE", "-print"]
    found = subprocess.run(find, capture_output=True, text=True).stdout
    hits = [p for p in found.split() if not os.path.realpath(p).startswith(str(dest) + "/")]
    return hits + [p for p in ("/ESCAPED_FILE", "/tmp/ESCAPED_FILE") if os.path.lexists(p)]


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    d = tmp_path / "a" / "dest"
    d.mkdir(parents=True)
    return d


def test_cve_2025_4517_symlink_chain_cannot_escape(dest: Path, tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchiveError, match="symlink"):
        extract(cve_2025_4517_chain(), dest)
    assert escaped(tmp_path, dest) == []
    assert list(dest.iterdir()) == []  # a refused copy leaves nothing, not even its harmless start


ATTACKS = {
    "dotdot": [member("top", tarfile.DIRTYPE), member("top/../ESCAPED_FILE", data=b"x")],
    "deep-dotdot": [member("top/a/../../../../ESCAPED_FILE", data=b"x")],
    "absolute": [member("top", tarfile.DIRTYPE), member("/tmp/ESCAPED_FILE", data=b"x")],
    "sibling-of-dest": [member("top", data=b"x"), member("ESCAPED_FILE", data=b"x")],
    "symlink-parent": [
        member("top", tarfile.DIRTYPE),
        member("top/up", tarfile.SYMTYPE, linkname="../.."),
        member("top/up/ESCAPED_FILE", data=b"x"),
    ],
    "absolute-symlink-parent": [
        member("top", tarfile.DIRTYPE),
        member("top/tmp", tarfile.SYMTYPE, linkname="/tmp"),
        member("top/tmp/ESCAPED_FILE", data=b"x"),
    ],
    "symlink-then-dir-entry-through-it": [
        member("top", tarfile.DIRTYPE),
        member("top/up", tarfile.SYMTYPE, linkname="../.."),
        member("top/up/sub", tarfile.DIRTYPE),
        member("top/up/sub/ESCAPED_FILE", data=b"x"),
    ],
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_hostile_names_are_refused(attack: str, dest: Path, tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchiveError):
        extract(archive(*ATTACKS[attack]), dest)
    assert escaped(tmp_path, dest) == []
    assert not (dest.parent / "ESCAPED_FILE").exists() and list(dest.iterdir()) == []


def test_link_into_a_file_is_replaced_not_written_through(dest: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("host data\n")
    extract(archive(member("top", tarfile.DIRTYPE), member("top/f", tarfile.SYMTYPE, linkname=str(victim))), dest)
    assert os.readlink(dest / "top" / "f") == str(victim)  # the box's link, target kept
    extract(archive(member("top", tarfile.DIRTYPE), member("top/f", data=b"box data\n")), dest)
    assert victim.read_text() == "host data\n"
    assert (dest / "top" / "f").read_text() == "box data\n" and not (dest / "top" / "f").is_symlink()


def test_hard_links_only_to_files_of_the_same_copy(dest: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("host data\n")
    mine = dest / "top" / "users-own.txt"
    mine.parent.mkdir()
    mine.write_text("user file\n")
    for linkname in (str(victim), "../victim.txt", "top/../../victim.txt", "top/users-own.txt", "top/missing"):
        with pytest.raises(UnsafeArchiveError):
            extract(archive(member("top", tarfile.DIRTYPE), member("top/hl", tarfile.LNKTYPE, linkname=linkname)), dest)
    assert victim.stat().st_nlink == 1 and mine.stat().st_nlink == 1
    # Through a symlink the same copy planted: refused too.
    with pytest.raises(UnsafeArchiveError):
        extract(archive(
            member("top", tarfile.DIRTYPE), member("top/out", tarfile.SYMTYPE, linkname=str(tmp_path)),
            member("top/hl", tarfile.LNKTYPE, linkname="top/out/victim.txt"),
        ), dest)  # fmt: skip
    assert victim.stat().st_nlink == 1
    # A file of this copy: linked.
    link = member("top/g", tarfile.LNKTYPE, linkname="top/f")
    extract(archive(member("top", tarfile.DIRTYPE), member("top/f", data=b"1"), link), dest)
    assert (dest / "top" / "g").stat().st_ino == (dest / "top" / "f").stat().st_ino


def test_no_devices_fifos_setuid_or_box_owners(dest: Path) -> None:
    extract(archive(
        member("top", tarfile.DIRTYPE, mode=0o7777),
        member("top/null", tarfile.CHRTYPE, devmajor=1, devminor=3),
        member("top/disk", tarfile.BLKTYPE, devmajor=8, devminor=0),
        member("top/fifo", tarfile.FIFOTYPE),
        member("top/suid", data=b"#!/bin/sh\n", mode=0o6755, uid=0, gid=0),
        member("top/owned", data=b"x", mode=0o644, uid=1234, gid=4321),
    ), dest)  # fmt: skip
    top = dest / "top"
    assert sorted(p.name for p in top.iterdir()) == ["owned", "suid"]
    assert stat.S_IMODE(top.stat().st_mode) == 0o777
    assert stat.S_IMODE((top / "suid").stat().st_mode) == 0o755
    for p in (top, top / "suid", top / "owned"):
        assert (p.stat().st_uid, p.stat().st_gid) == (os.getuid(), os.getgid())


def test_3000_level_path_is_a_typed_error(dest: Path) -> None:
    deep = "top/" + "a/" * 3000 + "f"
    with pytest.raises(UnsafeArchiveError, match=r"longer than|deeper than"):
        extract(archive(member("top", tarfile.DIRTYPE), member(deep, data=b"x")), dest)
    with pytest.raises(UnsafeArchiveError, match="deeper than"):
        extract(archive(member("top/" + "a/" * 1500 + "f", data=b"x")), dest, limits=Limits(max_path_bytes=1 << 20))


def test_a_1000_level_tree_costs_linear_work(dest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every directory of a 1,000-level chain gets its mode at the end, deepest first: going
    back up must not reopen the whole path each time (that was half a million opens per chain,
    a box's cheap way to keep the host busy)."""
    names = ["top"]
    for _ in range(1000):
        names.append(names[-1] + "/d")
    opens = 0
    real_open = os.open

    def counting_open(*args: object, **kw: object) -> int:
        nonlocal opens
        opens += 1
        return real_open(*args, **kw)  # type: ignore[arg-type]

    data = archive(*(member(n, tarfile.DIRTYPE, mode=0o750) for n in names))
    monkeypatch.setattr(os, "open", counting_open)
    extract(data, dest)
    monkeypatch.undo()
    assert opens < 50_000, opens
    deepest = dest / "/".join(names[-1].split("/"))
    assert deepest.is_dir() and stat.S_IMODE(deepest.stat().st_mode) == 0o750
    remove_tree(dest / "top")  # (pytest's own cleanup recurses: 1,000 levels are too deep for it)


def zero_stream(size: int, name: str = "top") -> Callable[[int], bytes]:
    """A dense tar stream of one all-zero file of ``size`` bytes, generated as it is read."""
    info = tarfile.TarInfo(name)
    info.size = size
    parts: Iterator[bytes] = iter(
        [info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")]
        + [bytes(1 << 20)] * (size >> 20) + [bytes(size & ((1 << 20) - 1)), bytes(-size % 512 + 1024)]
    )  # fmt: skip
    pending = b""

    def read(n: int) -> bytes:
        nonlocal pending
        if not pending:
            pending = next(parts, b"")
        out, pending = pending[:n], pending[n:]
        return out

    return read


def test_dense_zero_stream_stays_sparse_on_the_host(dest: Path) -> None:
    size = 1536 << 20
    extract(zero_stream(size), dest / "big")
    st = (dest / "big").stat()
    assert st.st_size == size
    assert st.st_blocks * 512 < 1 << 20, f"{st.st_blocks * 512} bytes allocated for {size} zero bytes"


def test_gnu_sparse_member_keeps_holes_and_data(dest: Path, tmp_path: Path) -> None:
    """The agent's writer sends only data regions (GNU sparse 1.0); the host rebuilds the file."""
    from boxlite.agent.tario import write_tree

    src = tmp_path / "sparse.bin"
    with open(src, "wb") as f:
        f.truncate(1536 << 20)
        f.seek(1000 << 20)
        f.write(b"middle" * 1000)
        f.seek((1536 << 20) - 3)
        f.write(b"end")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        write_tree(tar, str(src), "top")
    assert len(buf.getvalue()) < 1 << 20  # holes are not sent
    extract(buf.getvalue(), dest / "copy")
    out = dest / "copy"
    assert out.stat().st_size == 1536 << 20 and out.stat().st_blocks * 512 < 1 << 20
    with open(out, "rb") as f:
        f.seek((1000 << 20) - 2)
        assert f.read(8) == b"\0\0middle"
        f.seek((1536 << 20) - 4)
        assert f.read() == b"\0end"
    buf.seek(0)  # Python's own tarfile reads the same member back (copy_in goes to the box's tarfile)
    with tarfile.open(fileobj=buf) as tar:
        (info,) = tar.getmembers()
        assert (info.name, info.size, info.sparse is not None) == ("top", 1536 << 20, True)


def test_total_bytes_and_entries_are_capped(dest: Path) -> None:
    with pytest.raises(ResourceExhaustedError, match="max_bytes"):
        extract(zero_stream(8 << 20), dest / "f", limits=Limits(max_bytes=2 << 20))
    many = archive(member("top", tarfile.DIRTYPE), *(member(f"top/{i}", data=b"x") for i in range(50)))
    with pytest.raises(ResourceExhaustedError, match="max_entries"):
        extract(many, dest, limits=Limits(max_entries=20))
    assert list(dest.iterdir()) == []  # neither the partial file nor the first 19 entries


def test_oversized_and_malformed_headers_are_refused(dest: Path) -> None:
    pax = tarfile.TarInfo("x")
    pax.type = tarfile.XHDTYPE
    pax.size = 1 << 40  # a PAX header claiming 1 TiB: refused before reading it
    t0 = time.monotonic()
    with pytest.raises(UnsafeArchiveError, match="extended headers"):
        extract(pax.tobuf(tarfile.GNU_FORMAT) + bytes(1 << 20), dest)
    assert time.monotonic() - t0 < 5
    good = archive(member("top", data=b"x"))
    with pytest.raises(UnsafeArchiveError, match="checksum"):
        extract(good[:148] + b"0000000\0" + good[156:], dest)
    negative = bytearray(good[:512])
    negative[124:136] = b"\xff" * 12  # base-256 negative size (CVE-2025-8194 looped on these)
    negative[148:156] = b" " * 8
    negative[148:156] = b"%06o\0 " % sum(negative)
    with pytest.raises(UnsafeArchiveError, match="negative"):
        extract(bytes(negative) + bytes(1024), dest)
    with pytest.raises(UnsafeArchiveError, match="empty"):
        extract(b"", dest)
    assert not (dest / "top").exists()


def test_extreme_numbers_are_clamped_or_refused(dest: Path) -> None:
    """Times, sizes and sparse maps past what the kernel takes: never OverflowError/ValueError."""
    extract(archive(member("top", data=b"x", mtime=1e15, uid=1 << 40, mode=0o777777)), dest / "t")
    assert (dest / "t").stat().st_mtime > 9e9 - 1 and stat.S_IMODE((dest / "t").stat().st_mode) == 0o777
    for pax in (
        {"GNU.sparse.map": "0,1", "GNU.sparse.size": str(1 << 80)},
        {"GNU.sparse.map": f"{1 << 70},1", "GNU.sparse.size": "10"},
        {"GNU.sparse.map": "0,1,0,1", "GNU.sparse.size": "10"},  # overlapping regions
        {"GNU.sparse.map": "0,x", "GNU.sparse.size": "10"},
        {"size": str(1 << 80)},
        {"mtime": "nan"},
    ):
        info, data = member("top", data=b"x")
        info.pax_headers = pax
        try:
            extract(archive((info, data)), dest / "s")
        except UnsafeArchiveError:
            continue
        assert pax == {"mtime": "nan"} and (dest / "s").stat().st_mtime == 0


def test_mutated_archives_only_raise_typed_errors(tmp_path: Path) -> None:
    """Random corruption of valid archives (headers, PAX records, a sparse map): every failure
    is a BoxliteError, never ValueError/UnicodeError/OverflowError/struct.error."""
    import random
    import shutil

    from boxlite.agent.tario import write_tree

    seeds = [archive(
        member("top", tarfile.DIRTYPE), member("top/f", data=b"hello" * 100),
        member("top/l", tarfile.SYMTYPE, linkname="f"), member("top/h", tarfile.LNKTYPE, linkname="top/f"),
        member("top/" + "\u00e9" * 80, data=b"long name"),
    )]  # fmt: skip
    sparse = tmp_path / "sparse"
    with open(sparse, "wb") as f:
        f.truncate(1 << 20)
        f.seek(5000)
        f.write(b"data")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        write_tree(tar, str(sparse), "top")
    seeds.append(buf.getvalue())
    dest = tmp_path / "dest"
    rnd = random.Random(18)
    mutants = [
        seed[:pos] + bytes([value]) + seed[pos + 1 :]  # every byte of the first headers, a few values
        for seed in seeds for pos in range(min(len(seed), 1536)) for value in (0x80, 0xFF, 0x39, 0x0A, 0x00)
    ]  # fmt: skip
    for _ in range(300):  # and random multi-byte damage, deletions included
        damaged = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randint(1, 8)):
            pos = rnd.randrange(len(damaged))
            if rnd.random() < 0.7:
                damaged[pos] = rnd.randrange(256)
            else:
                del damaged[pos : pos + rnd.randint(1, 600)]
        mutants.append(bytes(damaged))
    for data in mutants:
        dest.mkdir()
        try:
            extract(data, dest, limits=Limits(max_bytes=1 << 24))
        except boxlite.BoxliteError:
            pass
        shutil.rmtree(dest)


async def test_deadline_against_a_stalling_sender(dest: Path) -> None:
    from boxlite.api.archive import extract_stream

    closed = asyncio.Event()

    async def stall() -> AsyncIterator[bytes]:
        try:
            yield archive(member("top", tarfile.DIRTYPE))[:512]
            await asyncio.sleep(3600)
        finally:
            closed.set()

    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="deadline"):
        await extract_stream(stall(), str(dest), "top", boxlite.CopyOptions(timeout=0.5))
    assert time.monotonic() - t0 < 5
    assert closed.is_set()  # the sender was stopped (for a box: its tar is killed)


async def test_cancelled_copy_out_stops_its_thread_and_the_sender(dest: Path) -> None:
    import threading

    from boxlite.api.archive import extract_stream

    closed = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        try:
            yield archive(member("top", tarfile.DIRTYPE))[:512]
            await asyncio.sleep(3600)
        finally:
            closed.set()

    task = asyncio.create_task(extract_stream(slow(), str(dest), "top", boxlite.CopyOptions()))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed.is_set()
    for _ in range(50):
        if not any(t.name == "boxlite-copy-out" for t in threading.enumerate()):
            break
        await asyncio.sleep(0.05)
    assert not any(t.name == "boxlite-copy-out" for t in threading.enumerate())


def test_overwrite_false_keeps_what_exists_and_follows_nothing(dest: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (dest / "top").mkdir()
    (dest / "top" / "f").write_text("mine")
    (dest / "top" / "l").symlink_to(victim)
    extract(archive(
        member("top", tarfile.DIRTYPE), member("top/f", data=b"box"), member("top/l", data=b"box"),
        member("top/new", data=b"new"),
    ), dest, overwrite=False)  # fmt: skip
    assert (dest / "top" / "f").read_text() == "mine" and (dest / "top" / "l").is_symlink()
    assert (dest / "top" / "new").read_text() == "new" and list(victim.iterdir()) == []
    extract(archive(member("top/l/f", data=b"x")), dest, overwrite=False)  # the link is kept, not entered
    assert (dest / "top" / "l").is_symlink() and list(victim.iterdir()) == []
    extract(archive(member("top/l/f", data=b"x")), dest)  # overwriting: the box's directory replaces the link
    assert not (dest / "top" / "l").is_symlink() and (dest / "top" / "l" / "f").read_bytes() == b"x"
    assert list(victim.iterdir()) == [] and (dest / "top" / "f").read_text() == "mine"


def test_a_failed_copy_changes_nothing_at_the_destination(dest: Path, tmp_path: Path) -> None:
    """Files already there are neither truncated, replaced nor joined by half a copy, whatever
    stops it (a limit, a hostile entry at the end, a conflict with what is there), and no
    staging directory is left behind."""
    (dest / "top" / "sub").mkdir(parents=True)
    (dest / "top" / "f").write_text("mine")
    (dest / "top" / "sub" / "g").write_text("mine too")
    (dest / "top" / "x").mkdir()
    (dest / "top" / "x" / "keep").write_text("kept")
    (dest / "result.json").write_text('{"done": true}')
    before = tree(dest)
    start = [member("top", tarfile.DIRTYPE), member("top/f", data=b"box"), member("top/sub/g", data=b"box")]
    failing = {
        "entries": (archive(*start, member("top/new", data=b"new")), {"limits": Limits(max_entries=3)}),
        "bytes": (archive(*start, member("top/big", data=bytes(1 << 20))), {"limits": Limits(max_bytes=64 << 10)}),
        "hostile entry last": (archive(*start, member("top/../ESCAPED_FILE", data=b"x")), {}),
        "replaces a full dir": (archive(*start, member("top/x", data=b"a file now")), {}),
    }
    for why, (data, kw) in failing.items():
        with pytest.raises((ResourceExhaustedError, UnsafeArchiveError)):
            extract(data, dest, **kw)
        assert tree(dest) == before, why
    one_file = archive(member("top", data=b"x" * (256 << 10)))
    with pytest.raises(ResourceExhaustedError):
        extract(one_file, dest / "result.json", limits=Limits(max_bytes=64 << 10))
    assert tree(dest) == before
    extract(archive(*start, member("top/new", data=b"new")), dest)  # the same copy, whole: merged
    after = tree(dest)
    assert (after["top/f"], after["top/sub/g"], after["top/new"], after["top/x/keep"]) == ("box", "box", "new", "kept")
    assert sorted(p.name for p in dest.iterdir()) == ["result.json", "top"]  # no staging left


def test_extractor_under_debians_python_without_tarfile_filters(tmp_path: Path) -> None:
    """Debian's /usr/bin/python3 (3.11.2: no tarfile.FilterError) runs the same extractor on the
    same hostile archives (written here, read there)."""
    attacks = [cve_2025_4517_chain()] + [archive(*m) for m in ATTACKS.values()]
    for i, data in enumerate(attacks):
        (tmp_path / f"attack{i}.tar").write_bytes(data)
    big = tarfile.TarInfo("top")
    big.size = 256 << 20
    (tmp_path / "big.hdr").write_bytes(big.tobuf(tarfile.PAX_FORMAT))
    script = textwrap.dedent(f"""
        import glob, io, itertools, os, sys, tarfile, types
        pkg = types.ModuleType("boxlite"); pkg.__path__ = [{str(SRC / "boxlite")!r}]
        sys.modules["boxlite"] = pkg  # the extractor alone, without the SDK's dependencies
        from boxlite.errors import UnsafeArchiveError
        from boxlite.fsutil.extract import extract_archive
        tmp = {str(tmp_path)!r}
        dest = os.path.join(tmp, "a", "dest")
        os.makedirs(dest)
        results = []
        for path in sorted(glob.glob(tmp + "/attack*.tar")):
            try:
                extract_archive(open(path, "rb").read, dest, "top")
                results.append("extracted")
            except UnsafeArchiveError:
                results.append("refused")
        head = open(tmp + "/big.hdr", "rb").read()
        # then 256 MiB of zeros, made as they are read
        parts = itertools.chain([head], itertools.repeat(bytes(1 << 20), 256), [bytes(1024)])
        pending = [b""]
        def read(n):
            if not pending[0]:
                pending[0] = next(parts, b"")
            out, pending[0] = pending[0][:n], pending[0][n:]
            return out
        extract_archive(read, dest + "/big", "top")
        st = os.stat(dest + "/big")
        print(sys.version_info[:2], hasattr(tarfile, "FilterError"), results, st.st_size, st.st_blocks * 512)
    """)
    out = subprocess.run(["/usr/bin/python3", "-I", "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("refused") == len(attacks) and "extracted" not in out.stdout, out.stdout
    size, allocated = map(int, out.stdout.split()[-2:])
    assert size == 256 << 20 and allocated < 1 << 20, out.stdout
    assert escaped(tmp_path, tmp_path / "a" / "dest") == []


# -- real boxes (every engine) -----------------------------------------------------------------
async def sh(box: boxlite.SimpleBox, script: str) -> str:
    result = await box.exec("sh", "-c", script)
    assert result.exit_code == 0, result
    return result.stdout


async def test_box_reshaping_its_tree_between_three_copies(box: boxlite.SimpleBox, tmp_path: Path) -> None:
    """The CVE-2025-4517 chain laid down by three copy_outs of one box directory into the same
    destination, the box reshaping /top in between (each of its own archives stays honest)."""
    dest = tmp_path / "a" / "dest"
    dest.mkdir(parents=True)
    chain = "/top"
    script = ["rm -rf /top", "mkdir /top"]
    for step in STEPS:
        script += [f"mkdir {chain}/{LONG}", f"ln -s {LONG} {chain}/{step}"]
        chain += f"/{LONG}"
    await sh(box, " && ".join(script))
    await box.copy_out("/top", str(dest))  # 1: the long directories and the letter links
    letters = "/".join(STEPS)
    await sh(box, f"rm -rf /top && mkdir -p /top/{letters} && ln -s {'../' * 16} /top/{letters}/{'l' * 254}"
                  f" && ln -s {letters}/{'l' * 254}/../.. /top/escape")  # fmt: skip
    for attempt in ("2", "3"):
        try:
            await box.copy_out("/top", str(dest))  # 2: real dirs where the host has links, the escape link
        except boxlite.BoxliteError:
            pass
        if attempt == "2":  # 3: the escape link is a directory in the box now
            await sh(box, "rm -rf /top && mkdir -p /top/escape && echo pwned > /top/escape/ESCAPED_FILE")
    assert escaped(tmp_path, dest) == []
    landed = dest / "top" / "escape" / "ESCAPED_FILE"
    assert landed.is_file() and os.path.realpath(landed).startswith(str(dest) + "/")


async def test_box_links_dirs_and_special_files(box: boxlite.SimpleBox, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    await sh(box, f"mkdir -p /d && ln -s {victim} /d/abs && ln -s ../../.. /d/up && mkfifo /d/fifo"
                  " && echo '#!/bin/sh' > /d/suid && chmod 755 /d/suid"
                  " && { chmod 6755 /d/suid 2>/dev/null || true; }")  # fmt: skip
    await box.copy_out("/d", str(dest))
    assert os.readlink(dest / "d" / "abs") == str(victim) and os.readlink(dest / "d" / "up") == "../../.."
    assert not (dest / "d" / "fifo").exists()
    mode = (dest / "d" / "suid").stat()
    assert stat.S_IMODE(mode.st_mode) == 0o755 and mode.st_uid == os.getuid()
    await box.copy_out("/dev/null", str(dest / "null"))  # a device: nothing is created
    assert not (dest / "null").exists() and not (dest / "null").is_symlink()
    await sh(box, "rm /d/abs /d/up && mkdir /d/abs /d/up && echo x > /d/abs/ESCAPED_FILE"
                  " && echo x > /d/up/ESCAPED_FILE")  # fmt: skip
    await box.copy_out("/d", str(dest))  # the links are replaced by the box's directories
    assert list(victim.iterdir()) == [] and escaped(tmp_path, dest) == []
    assert (dest / "d" / "up" / "ESCAPED_FILE").is_file()


async def test_box_3000_level_tree_is_a_typed_error(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, home: Path, tmp_path: Path
) -> None:
    level = "/a" * 1000  # three 1000-level trees moved into each other (each path < PATH_MAX)
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime) as box:
        await sh(box, f"mkdir -p /deep{level} /x2{level} /x3{level} && echo bottom > /x3{level}/f"
                      f" && mv /x2 /deep{level}/ && mv /x3 /deep{level}/x2{level}/")  # fmt: skip
        try:
            with pytest.raises(boxlite.BoxliteError, match="deeper than"):
                await box.copy_out("/deep", str(tmp_path / "deep"))
            assert (await box.exec("true")).exit_code == 0
        finally:
            subprocess.run(["rm", "-rf", str(tmp_path / "deep")], check=True)  # shutil.rmtree recurses
    # Removing the box removed its 3000-level tree too (no RecursionError, nothing left).
    assert list((home / "boxes").iterdir()) == []


async def test_followed_symlink_loops_are_typed_errors(box: boxlite.SimpleBox, tmp_path: Path) -> None:
    """follow_symlinks through a link loop: both tar writers stop with a typed error."""
    await sh(box, "mkdir -p /loop && ln -s . /loop/self")
    loop = r"deeper than|longer than|symbolic links"  # whichever comes first: a cap or the kernel's ELOOP
    with pytest.raises(boxlite.BoxliteError, match=loop):
        await box.copy_out("/loop", str(tmp_path / "out"), follow_symlinks=True)
    subprocess.run(["rm", "-rf", str(tmp_path / "out")], check=True)
    (tmp_path / "hostloop").mkdir()
    (tmp_path / "hostloop" / "self").symlink_to(".")
    with pytest.raises(boxlite.BoxliteError, match=loop):
        await box.copy_in(str(tmp_path / "hostloop"), "/tmp", follow_symlinks=True)
    assert (await box.exec("true")).exit_code == 0


def test_remove_tree_any_depth_never_follows_links(tmp_path: Path) -> None:
    from boxlite.fsutil.dirfd import remove_tree

    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "file").write_text("x")
    top = tmp_path / "top"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY)
    for _ in range(3000):
        os.symlink(str(keep), "link", dir_fd=fd)
        os.close(os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
        os.mkdir("a", dir_fd=fd)
        nfd = os.open("a", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(fd)
    remove_tree(top)
    assert not top.exists() and (keep / "file").read_text() == "x"


async def test_box_sparse_file_stays_sparse(box: boxlite.SimpleBox, tmp_path: Path) -> None:
    await sh(box, "dd if=/dev/zero of=/big bs=1 count=0 seek=1536M 2>/dev/null"
                  " && printf middle | dd of=/big bs=1 seek=1048576000 conv=notrunc 2>/dev/null")  # fmt: skip
    await box.copy_out("/big", str(tmp_path / "big"))
    st = (tmp_path / "big").stat()
    assert st.st_size == 1536 << 20
    assert st.st_blocks * 512 < 1 << 20, f"{st.st_blocks * 512} bytes allocated on the host"
    with open(tmp_path / "big", "rb") as f:
        f.seek(1048576000 - 1)
        assert f.read(8) == b"\0middle\0"


async def test_box_total_bytes_cap_and_deadline(box: boxlite.SimpleBox, tmp_path: Path) -> None:
    await sh(box, "head -c 3000000 /dev/urandom > /blob")
    (tmp_path / "blob").write_text("the host's own copy")
    with pytest.raises(ResourceExhaustedError, match="max_bytes"):
        await box.box.copy_out("/blob", str(tmp_path / "blob"), boxlite.CopyOptions(max_bytes=1 << 20))
    assert (tmp_path / "blob").read_text() == "the host's own copy"  # not replaced by the first MiB
    assert not list(tmp_path.glob(".boxlite-copy-*"))  # no staging directory left
    with pytest.raises(TimeoutError):
        await box.box.copy_out("/blob", str(tmp_path / "blob2"), boxlite.CopyOptions(timeout=1e-6))
    with pytest.raises(boxlite.ConfigError):
        await box.box.copy_out("/blob", str(tmp_path / "blob3"), boxlite.CopyOptions(max_bytes=0))
    assert (await box.exec("true")).exit_code == 0  # the box's tar was stopped, the box is fine
    await box.copy_out("/blob", str(tmp_path / "blob4"))
    assert (tmp_path / "blob4").stat().st_size == 3000000
