"""Tar archives for copy_in / copy_out, on the host side."""

from __future__ import annotations

import asyncio
import tarfile
import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

from ..errors import BoxliteError, NotFoundError
from .options import CopyOptions


@asynccontextmanager
async def host_archive(host_path: str, follow_symlinks: bool) -> AsyncIterator[tuple[str, AsyncIterator[bytes]]]:
    """(top-level name, tar chunks) of a host file or directory, for copy_in."""
    src = Path(host_path)
    if not src.exists() and not src.is_symlink():
        raise NotFoundError(f"no such host path: {host_path}")
    name = src.resolve().name if str(host_path).rstrip("/") in (".", "") else src.name
    with tempfile.TemporaryFile() as tmp:
        await asyncio.to_thread(write_tar, tmp, src, name, follow_symlinks)
        tmp.seek(0)
        yield name, file_chunks(tmp)


async def extract_stream(chunks: AsyncIterable[bytes], host_dest: str, name: str, opts: CopyOptions) -> None:
    """Spool a tar stream from a box to a temporary file, then ``extract_tar`` it."""
    with tempfile.TemporaryFile() as tmp:
        async for chunk in chunks:
            await asyncio.to_thread(tmp.write, chunk)
        tmp.seek(0)
        await asyncio.to_thread(extract_tar, tmp, Path(host_dest), name, opts)


def write_tar(fileobj: IO[bytes], src: Path, name: str, follow_symlinks: bool) -> None:
    """A tar of ``src`` whose top-level member is ``name``."""
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT, dereference=follow_symlinks) as tar:
        tar.add(str(src), arcname=name, recursive=True)


async def file_chunks(fileobj: IO[bytes], size: int = 1 << 20) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(fileobj.read, size):
        yield chunk


def extract_tar(fileobj: IO[bytes], dest: Path, name: str, opts: CopyOptions) -> None:
    """Extract a tar that came from a box into ``dest`` (inside it if it is a directory and
    ``include_parent``; otherwise the top member ``name`` becomes ``dest``)."""
    if opts.include_parent and dest.is_dir():
        base, rename = dest, None
    else:
        base, rename = dest.parent, dest.name
        base.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=fileobj, mode="r") as tar:
        members = []
        for member in tar.getmembers():
            parts = member.name.split("/")
            if rename is not None and parts[0] == name:
                member.name = "/".join([rename, *parts[1:]])
            if not opts.overwrite and (base / member.name).exists():
                continue
            members.append(member)
        try:
            tar.extractall(base, members=members, filter=host_filter)
        except tarfile.FilterError as e:
            raise BoxliteError(f"copy_out refused an unsafe archive entry from the box: {e}") from None


def host_filter(member: tarfile.TarInfo, dest: str) -> Any:
    """Python's ``data`` filter, except that a symlink may point anywhere: the link itself is
    harmless, and the ``data`` filter still refuses any later entry whose real path leaves
    ``dest`` through it."""
    try:
        return tarfile.data_filter(member, dest)
    except (tarfile.AbsoluteLinkError, tarfile.LinkOutsideDestinationError):
        if not member.issym():
            raise
        return tarfile.tar_filter(member, dest)
