"""``cp``: copy files between the host and a box (``BOX:path`` on either side; ``-`` is a tar
stream on stdin or stdout, as in docker)."""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
from collections.abc import AsyncIterator

import click

from ..api.box import Box
from ..api.options import CopyOptions
from ..api.runtime import Boxlite
from ..errors import RequestTooLargeError
from .common import complete_box, find_box, with_runtime
from .errors import fail
from .fdwrite import write_all

STREAM_MAX = 1 << 30
"""Default cap (bytes) of a tar stream ``cp`` reads from stdin or writes to stdout; a box (or a
runaway pipe) cannot make one copy move more. ``BOXLITE_CP_MAX_BYTES`` changes it."""
CHUNK = 1 << 16
HEAD_MAX = 1 << 20


def stream_max() -> int:
    value = os.environ.get("BOXLITE_CP_MAX_BYTES", "")
    try:
        return int(value) if value else STREAM_MAX
    except ValueError:
        raise fail(f"BOXLITE_CP_MAX_BYTES must be a number of bytes, not {value!r}") from None


def split_box_path(arg: str) -> tuple[str | None, str]:
    """``BOX:/path`` → (BOX, /path); a host path (also ``./a:b`` or ``/x:y``) → (None, arg)."""
    if arg.startswith(("/", ".", "~")) or ":" not in arg:
        return None, arg
    box, _, path = arg.partition(":")
    return (box, path or "/") if box else (None, arg)


@click.command()
@click.argument("src", shell_complete=complete_box)
@click.argument("dst", shell_complete=complete_box)
@click.option("--follow-symlinks", is_flag=True, help="Copy what symbolic links point to, not the links.")
@click.option("--no-overwrite", is_flag=True, help="Keep files that already exist at the destination.")
@click.option("--include-parent/--no-include-parent", default=True, show_default=True,
              help="Copy a directory as itself (docker cp), or only its contents.")  # fmt: skip
@with_runtime
async def cp(rt: Boxlite, src: str, dst: str, follow_symlinks: bool = False, no_overwrite: bool = False,
             include_parent: bool = True) -> int:  # fmt: skip
    """Copy files between a box and the host: `cp BOX:PATH HOSTPATH` or `cp HOSTPATH BOX:PATH`.

    `cp BOX:PATH -` writes a tar of PATH to stdout; `cp - BOX:DIR` extracts a tar read from
    stdin into the directory DIR (at most BOXLITE_CP_MAX_BYTES, default 1 GiB, either way).
    A stopped box is started for the copy and stopped again afterwards."""
    src_box, src_path = split_box_path(src)
    dst_box, dst_path = split_box_path(dst)
    if (src_box is None) == (dst_box is None):
        raise fail("exactly one of SRC and DST must be BOX:PATH (e.g. 'boxlite cp mybox:/etc/hosts .')")
    box_path = src_path if src_box is not None else dst_path
    if not box_path.startswith("/"):
        raise fail(f"box path must be absolute: {box_path}")
    options = CopyOptions(overwrite=not no_overwrite, follow_symlinks=follow_symlinks, include_parent=include_parent)
    box = await find_box(rt, src_box or dst_box or "")
    was_running = box.info().state.running
    try:
        if src_box is not None and dst_path == "-":
            await _tar_to_stdout(box, src_path, stream_max(), follow_symlinks)
        elif src_box is not None:
            await box.copy_out(src_path, dst_path, options)
        elif src_path == "-":
            await _tar_from_stdin(box, dst_path, stream_max(), options.overwrite)
        else:
            await box.copy_in(src_path, dst_path, options)
    finally:
        if not was_running and box.info().state.running:
            await box.stop()
    return 0


async def _tar_to_stdout(box: Box, path: str, limit: int, follow_symlinks: bool) -> None:
    sent = 0
    chunks = box.copy_out_tar(path, follow_symlinks)
    try:
        async for chunk in chunks:
            sent += len(chunk)
            if sent > limit:
                raise RequestTooLargeError(f"the tar of {path} is larger than {limit} bytes (BOXLITE_CP_MAX_BYTES)")
            write_all(1, chunk)
    finally:
        await chunks.aclose()


async def _tar_from_stdin(box: Box, dest: str, limit: int, overwrite: bool) -> None:
    """Docker's ``cp - BOX:DIR``: DIR must be a directory of the box; the archive's members are
    extracted into it (the box's agent refuses absolute names and ``..``, in a chroot)."""
    await _require_dir(box, dest)
    await box.copy_in_tar(_stdin_chunks(limit), dest, "", include_parent=True, overwrite=overwrite)


async def _require_dir(box: Box, dest: str) -> None:
    """``dest`` is a directory in the box: the first member of its own tar says so (read until
    that member's header, extension headers included, parses; at most ``HEAD_MAX`` bytes)."""
    chunks = box.copy_out_tar(dest)
    member: tarfile.TarInfo | None = None
    head = b""
    try:
        async for chunk in chunks:
            head += chunk
            member = _first_member(head)
            if member is not None or len(head) > HEAD_MAX:
                break
    finally:
        await chunks.aclose()
    if member is None and len(head) > HEAD_MAX:
        return  # headers this long: let the agent extract (or refuse) as it would any tar
    if member is None or not member.isdir():
        raise fail(f"destination {dest} must be a directory in the box when copying a tar from stdin")


def _first_member(head: bytes) -> tarfile.TarInfo | None:
    """The first member of a tar that starts with ``head``; None until enough of it is there."""
    try:
        with tarfile.open(fileobj=io.BytesIO(head), mode="r:") as tar:
            return tar.next()
    except (tarfile.TarError, EOFError):
        return None


async def _stdin_chunks(limit: int) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    received = 0
    while True:
        chunk = await loop.run_in_executor(None, os.read, 0, CHUNK)
        if not chunk:
            return
        received += len(chunk)
        if received > limit:
            raise RequestTooLargeError(f"the tar on stdin is larger than {limit} bytes (BOXLITE_CP_MAX_BYTES)")
        yield chunk
