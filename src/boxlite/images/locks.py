"""Advisory file locks (fcntl.flock) usable from sync and async code."""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: Path, shared: bool = False) -> Iterator[None]:
    """Hold an flock on ``path`` (created if missing) for the duration of the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@asynccontextmanager
async def async_file_lock(path: Path, shared: bool = False) -> AsyncIterator[None]:
    """Like :func:`file_lock` but waits without blocking the event loop."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
        except BlockingIOError:
            await asyncio.to_thread(fcntl.flock, fd, op)
        yield
    finally:
        os.close(fd)
