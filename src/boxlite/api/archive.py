"""Tar archives for copy_in / copy_out, on the host side."""

from __future__ import annotations

import asyncio
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from ..errors import BoxliteError
from .options import CopyOptions


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
