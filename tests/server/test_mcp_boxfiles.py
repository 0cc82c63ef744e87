"""The MCP file tools against a hostile box: what comes back is a tar nobody vouches for."""

from __future__ import annotations

import asyncio
import io
import tarfile
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from boxlite.errors import ConfigError, ResourceExhaustedError, TimeoutError, UnsafeArchiveError
from boxlite.mcp import boxfiles, limits


class FakeBox:
    """Answers copy_out_tar with the chunks given (and records whether the stream was closed)."""

    def __init__(self, chunks: list[bytes], stall: bool = False) -> None:
        self.chunks, self.stall, self.closed = chunks, stall, False

    async def copy_out_tar(self, src: str, follow_symlinks: bool = False) -> AsyncGenerator[bytes, None]:
        try:
            for chunk in self.chunks:
                yield chunk
            if self.stall:
                await asyncio.sleep(3600)
        finally:
            self.closed = True


def tar_of(*members: tuple[str, int, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.type = bytes([kind])
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def header_claiming(size: int) -> bytes:
    """One ustar header for a regular file of ``size`` bytes (the data never follows)."""
    info = tarfile.TarInfo("big")
    info.size = size
    return info.tobuf(format=tarfile.GNU_FORMAT)


async def test_a_file_larger_than_the_limit_is_refused_from_its_header() -> None:
    box = FakeBox([header_claiming(1 << 40)], stall=True)  # 1 TiB announced, nothing sent
    with pytest.raises(ResourceExhaustedError):
        await boxfiles.read_file(box, "/big")  # type: ignore[arg-type]
    assert box.closed


async def test_a_stalling_box_hits_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "FILE_DEADLINE", 0.5)
    box = FakeBox([header_claiming(10)[:100]], stall=True)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(boxfiles.read_file(box, "/f"), 10)  # type: ignore[arg-type]
    await asyncio.sleep(0.1)
    assert box.closed


async def test_garbage_is_an_unsafe_archive() -> None:
    with pytest.raises(UnsafeArchiveError):
        await boxfiles.read_file(FakeBox([b"\x01" * 1024]), "/f")  # type: ignore[arg-type]


async def test_a_directory_or_link_is_not_read_as_a_file() -> None:
    box = FakeBox([tar_of(("d", ord(tarfile.DIRTYPE), b""))])
    with pytest.raises(ConfigError, match="not a regular file"):
        await boxfiles.read_file(box, "/d")  # type: ignore[arg-type]


async def test_listing_is_bounded_in_entries_and_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_LIST_ENTRIES", 3)
    many = tar_of(("d", ord(tarfile.DIRTYPE), b""), *((f"d/f{i}", ord(tarfile.REGTYPE), b"x") for i in range(10)))
    listing: dict[str, Any] = await boxfiles.list_files(FakeBox([many]), "/d")  # type: ignore[arg-type]
    assert [e["name"] for e in listing["entries"]] == ["f0", "f1", "f2"] and listing["truncated"]
    monkeypatch.setattr(limits, "MAX_LIST_ENTRIES", 1000)
    monkeypatch.setattr(limits, "MAX_LIST_SCAN", 4096)  # a big file early in the tree: listing stops there
    big = tar_of(("d", ord(tarfile.DIRTYPE), b""), ("d/a", ord(tarfile.REGTYPE), b"x"),
                 ("d/big", ord(tarfile.REGTYPE), b"y" * 100_000), ("d/z", ord(tarfile.REGTYPE), b"z"))  # fmt: skip
    box = FakeBox([big[i : i + 1024] for i in range(0, len(big), 1024)])
    listing = await boxfiles.list_files(box, "/d")  # type: ignore[arg-type]
    assert [e["name"] for e in listing["entries"]] == ["a", "big"] and listing["truncated"] and box.closed


@pytest.mark.parametrize("path", ["relative/x", "", "/a\0b", "/" + "a" * (limits.MAX_PATH + 1)])
def test_box_paths_are_absolute_and_bounded(path: str) -> None:
    with pytest.raises(ConfigError):
        boxfiles.box_path(path)


def test_box_paths_are_normalised() -> None:
    assert boxfiles.box_path("//tmp/../etc/./passwd") == "/etc/passwd"
    assert boxfiles.box_path("/../..") == "/"
