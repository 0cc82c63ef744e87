"""Tar archives for copy_in / copy_out, on the host side (shared by local and remote boxes).

copy_in: :func:`host_archive` tars a host path with the agent's own writer (no recursion
limit, sparse files stay sparse). copy_out: :func:`extract_stream` hands the box's tar stream,
chunk by chunk (nothing spooled), to :mod:`boxlite.fsutil.extract` in a worker thread, under
the limits of :class:`CopyOptions`. Nothing in the stream is trusted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import posixpath
import tarfile
import tempfile
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

from ..agent.tario import TreeLimitError, write_tree
from ..aio import within
from ..errors import BoxliteError, ConfigError, NotFoundError, ResourceExhaustedError, TimeoutError
from ..fsutil.extract import Limits, extract_archive
from .options import CopyOptions


def member_name(path: str) -> str:
    """Top-level member name of a copy of ``path``: its normalised base name (``/a/b/..`` ->
    ``a``; ``/`` and ``/..`` -> ``root``), never ``.``, ``..`` or empty."""
    return posixpath.basename(posixpath.normpath("/" + path)) or "root"


@asynccontextmanager
async def host_archive(host_path: str, follow_symlinks: bool) -> AsyncIterator[tuple[str, AsyncIterator[bytes]]]:
    """(top-level name, tar chunks) of a host file or directory, for copy_in."""
    src = Path(host_path)
    if not src.exists() and not src.is_symlink():
        raise NotFoundError(f"no such host path: {host_path}")
    name = Path(os.path.abspath(host_path)).name or "root"
    with tempfile.TemporaryFile() as tmp:
        try:
            await asyncio.to_thread(write_tar, tmp, src, name, follow_symlinks)
        except TreeLimitError as e:
            raise ResourceExhaustedError(f"copy_in of {host_path}: {e}") from None
        except FileNotFoundError as e:
            raise NotFoundError(f"copy_in of {host_path}: {e}") from None
        except OSError as e:  # unreadable host file, a link loop (ELOOP) with follow_symlinks...
            raise BoxliteError(f"copy_in of {host_path}: {e}") from None
        tmp.seek(0)
        yield name, file_chunks(tmp)


def write_tar(fileobj: IO[bytes], src: Path, name: str, follow_symlinks: bool) -> None:
    """A tar of ``src`` whose top-level member is ``name``."""
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT, dereference=follow_symlinks) as tar:
        write_tree(tar, str(src), name)


async def file_chunks(fileobj: IO[bytes], size: int = 1 << 20) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(fileobj.read, size):
        yield chunk


def copy_limits(opts: CopyOptions) -> Limits:
    """The extraction limits of ``opts`` (checked: a typed error for nonsense values)."""
    for field in ("max_bytes", "max_entries"):
        value = getattr(opts, field)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"CopyOptions.{field} must be a positive integer, not {value!r}")
    timeout = opts.timeout
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ConfigError(f"CopyOptions.timeout must be a positive number of seconds or None, not {timeout!r}")
    deadline = None if timeout is None else time.monotonic() + timeout
    return Limits(max_bytes=opts.max_bytes, max_entries=opts.max_entries, deadline=deadline)


async def extract_stream(chunks: AsyncIterable[bytes], host_dest: str, name: str, opts: CopyOptions) -> None:
    """Extract a tar stream from a box (top-level member ``name``) at ``host_dest``."""
    limits = copy_limits(opts)
    source = _LoopSource(chunks, asyncio.get_running_loop(), limits.deadline)
    work = _in_thread(
        extract_archive, source.read, host_dest, name,
        include_parent=opts.include_parent, overwrite=opts.overwrite, limits=limits,
    )  # fmt: skip
    try:
        await asyncio.shield(work)
    except asyncio.CancelledError:
        source.cancel()  # the thread stops at its next read
        with contextlib.suppress(BaseException):
            await work
        raise
    finally:
        await source.aclose()


def _in_thread(fn: Callable[..., None], *args: Any, **kwargs: Any) -> asyncio.Future[None]:
    """Run ``fn`` in a thread of its own: a box that stalls its copy_out must not hold one of
    the default executor's few threads (every ``to_thread`` in the process waits on those)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def run() -> None:
        error: BaseException | None = None
        try:
            fn(*args, **kwargs)
        except BaseException as e:
            error = e
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=run, name="boxlite-copy-out", daemon=True).start()
    return done


class _LoopSource:
    """Blocking ``read(n)`` for the extraction thread over an async chunk iterator that lives
    on the event loop; each wait for a chunk is bounded by the deadline."""

    def __init__(self, chunks: AsyncIterable[bytes], loop: asyncio.AbstractEventLoop, deadline: float | None) -> None:
        self._it = aiter(chunks)
        self._loop = loop
        self._deadline = deadline
        self._buf = b""
        self._pos = 0
        self._eof = False
        self._cancelled = False
        self._pending: concurrent.futures.Future[bytes | None] | None = None
        self._task: asyncio.Task[Any] | None = None

    # -- worker thread ---------------------------------------------------------------------
    def read(self, n: int) -> bytes:
        while self._pos >= len(self._buf):
            if self._eof:
                return b""
            chunk = self._fetch()
            if chunk is None:
                self._eof = True
                return b""
            self._buf, self._pos = chunk, 0
        data = self._buf[self._pos : self._pos + n]
        self._pos += len(data)
        return data

    def _fetch(self) -> bytes | None:
        if self._cancelled:
            raise BoxliteError("copy_out was cancelled")
        pending = asyncio.run_coroutine_threadsafe(self._next(), self._loop)
        self._pending = pending
        if self._cancelled:
            pending.cancel()
        try:
            return pending.result()
        except concurrent.futures.CancelledError:
            raise BoxliteError("copy_out was cancelled") from None
        finally:
            self._pending = None

    # -- event loop ------------------------------------------------------------------------
    async def _next(self) -> bytes | None:
        self._task = asyncio.current_task()
        timeout = None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
        try:
            return bytes(await within(anext(self._it), timeout))
        except StopAsyncIteration:
            return None
        except asyncio.TimeoutError as e:
            if isinstance(e, BoxliteError):  # the producer's own typed timeout
                raise
            raise TimeoutError("copy_out did not finish before its deadline (CopyOptions.timeout)") from None

    def cancel(self) -> None:
        self._cancelled = True
        pending = self._pending
        if pending is not None:
            pending.cancel()

    async def aclose(self) -> None:
        """Stop the producer (for a box: kill its tar) unless it ran to its end."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        close = getattr(self._it, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
