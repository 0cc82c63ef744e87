"""An exported archive as a server streams it, saved at its destination on this host.

The server is not trusted with this host's disk: the size it announces is checked before the
first byte is written (against ``ExportOptions.max_bytes`` and the free space), what arrives is
counted (never more than announced or allowed) and the free space is watched while writing,
every read has a deadline (the server sends a finished file, so a silent one is wedged), and the
archive appears at its path only once complete (written under a temporary name, then renamed).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from ...aio import within
from ...errors import ResourceExhaustedError, StorageError, TimeoutError

READ_DEADLINE = 60.0  # seconds one read of the body may wait
DISK_RESERVE = 256 << 20  # free bytes left on the destination's file system, whatever the server sends
CHECK_EVERY = 64 << 20  # bytes written between two looks at the free space


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


async def save_archive(resp: httpx.Response, target: Path, max_bytes: int | None) -> None:
    """Write the body of ``resp`` to ``target`` within the limits above; nothing is left at
    ``target`` (or beside it) when they stop it."""
    announced = resp.headers.get("content-length")
    size = int(announced) if announced and announced.isdigit() else None
    limit = max_bytes
    if size is not None:
        if limit is not None and size > limit:
            raise ResourceExhaustedError(
                f"the server's archive is {size} bytes, more than ExportOptions.max_bytes={limit}"
            )
        _check_room(target.parent, size)
        limit = size if limit is None else min(limit, size)
    tmp = target.with_name(f".{target.name}.boxlite-tmp-{secrets.token_hex(4)}")
    try:
        with open(tmp, "xb") as f:
            written, checked = 0, 0
            async for chunk in _chunks(resp):
                written += len(chunk)
                if limit is not None and written > limit:
                    raise ResourceExhaustedError(f"the server sent more than {limit} bytes of archive")
                f.write(chunk)
                if written - checked >= CHECK_EVERY:
                    checked = written
                    _check_room(target.parent, 0)
        os.replace(tmp, target)
    except OSError as e:
        if isinstance(e, TimeoutError):
            raise
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise ResourceExhaustedError(f"cannot write the archive to {target}: {e.strerror}") from e
        raise StorageError(f"cannot write the archive to {target}: {e}") from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _check_room(directory: Path, more: int) -> None:
    """``more`` bytes still fit on ``directory``'s file system with DISK_RESERVE left free."""
    free = free_bytes(directory)
    if free - more < DISK_RESERVE:
        raise ResourceExhaustedError(
            f"the archive would leave less than {DISK_RESERVE >> 20} MiB free on {directory} ({free} bytes free)"
        )


async def _chunks(resp: httpx.Response) -> AsyncIterator[bytes]:
    it = resp.aiter_raw()
    while True:
        try:
            chunk = await within(anext(it), READ_DEADLINE)
        except StopAsyncIteration:
            return
        except builtins.TimeoutError as e:
            raise TimeoutError(f"the server sent nothing for {READ_DEADLINE:.0f} s while exporting") from e
        yield chunk
