"""Files of a box for the MCP tools, through ``Box.copy_in_tar``/``Box.copy_out_tar`` (the same
paths as ``copy_in``/``copy_out`` and the REST archive routes).

The tar a box sends back is hostile: it is parsed with ``fsutil.tarread.TarReader`` (capped
headers, no ``tarfile``) in a worker thread fed chunk by chunk, with a byte budget and a
deadline, so neither a huge file nor a stalling box holds the server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import posixpath
import tarfile
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, TypeVar

from ..aio import within
from ..api.box import Box
from ..errors import BoxliteError, ConfigError, NotFoundError, ResourceExhaustedError, TimeoutError
from ..fsutil.tarread import Entry, TarReader
from . import limits

T = TypeVar("T")
META_SLACK = 2 << 20
"""Bytes of tar headers (PAX, long names) allowed in front of one file's data."""


def box_path(path: str) -> str:
    """``path`` as an absolute, normalised path in the box (never relative: there is no cwd)."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigError(f"box paths must be absolute: {path!r}")
    if "\0" in path or len(path.encode("utf-8", "surrogatepass")) > limits.MAX_PATH:
        raise ConfigError("box path contains NUL or is longer than the limit")
    norm = posixpath.normpath(path)
    return "/" + norm.lstrip("/")


async def write_file(box: Box, path: str, data: bytes, mode: int = 0o644) -> str:
    """Write ``data`` to ``path`` in the box (its directory must exist); returns the path."""
    dest = box_path(path)
    name = posixpath.basename(dest)
    if not name:
        raise ConfigError("write_file needs a file path, not /")
    if len(data) > limits.MAX_FILE:
        raise ResourceExhaustedError(f"file larger than {limits.MAX_FILE} bytes")
    if not 0 <= mode <= 0o7777:
        raise ConfigError(f"mode out of range: {mode:o}")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), mode, time.time()
        tar.addfile(info, io.BytesIO(data))

    async def one() -> AsyncIterator[bytes]:
        yield buf.getvalue()

    await within(box.copy_in_tar(one(), posixpath.dirname(dest), name, True, True), limits.FILE_DEADLINE)
    return dest


async def read_file(box: Box, path: str) -> bytes:
    """The content of the regular file ``path`` (symlinks resolved in the box), at most ``MAX_FILE``."""
    src = box_path(path)

    def first_file(reader: TarReader) -> bytes:
        entry = reader.next()
        if entry is None:
            raise NotFoundError(f"no such file in the box: {src}")
        if entry.kind != "file":
            raise ConfigError(f"not a regular file ({entry.kind}): {src}")
        if entry.realsize > limits.MAX_FILE:
            raise ResourceExhaustedError(f"file larger than {limits.MAX_FILE} bytes ({entry.realsize}): {src}")
        out = bytearray(entry.realsize)  # regions lie within realsize (checked by TarReader)
        for offset, chunk in reader.data():
            out[offset : offset + len(chunk)] = chunk
        return bytes(out)

    chunks = box.copy_out_tar(src, follow_symlinks=True)
    result, complete = await scan_tar(chunks, first_file, limits.MAX_FILE + META_SLACK)
    if not complete:  # only a header larger than the slack gets here
        raise ResourceExhaustedError(f"file larger than {limits.MAX_FILE} bytes: {src}")
    assert result is not None
    return result


async def list_files(box: Box, path: str) -> dict[str, Any]:
    """The entries directly under the directory ``path`` (or ``path`` itself if it is not one).
    Listed from the headers of the directory's tar: the whole subtree is walked (within
    ``MAX_LIST_SCAN`` bytes); a failure deep in it returns what was listed, marked truncated."""
    src = box_path(path)
    found: list[dict[str, Any]] = []
    more = [False]

    def entries(reader: TarReader) -> None:
        while (entry := reader.next()) is not None:
            parts = entry.name.strip("/").split("/")
            if len(parts) == 1 and entry.kind != "dir":
                found.append(_describe(entry, parts[0]))
            elif len(parts) == 2:
                if len(found) >= limits.MAX_LIST_ENTRIES:
                    more[0] = True
                    return
                found.append(_describe(entry, parts[1]))

    try:
        _, complete = await scan_tar(box.copy_out_tar(src), entries, limits.MAX_LIST_SCAN)
    except BoxliteError as e:  # e.g. an unreadable file deep in the tree (/proc): keep what was listed
        if not found:
            raise
        return {"path": src, "entries": found, "truncated": True, "error": f"{type(e).__name__}: {e}"}
    return {"path": src, "entries": found, "truncated": more[0] or not complete}


def _describe(entry: Entry, name: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "type": entry.kind, "mode": f"{entry.mode:04o}", "mtime": entry.mtime}
    if entry.kind == "file":
        out["size"] = entry.realsize
    if entry.linkname:
        out["link"] = entry.linkname
    return out


class _OverBudget(Exception):
    pass


async def scan_tar(
    chunks: AsyncGenerator[bytes, None], parse: Callable[[TarReader], T], budget: int
) -> tuple[T | None, bool]:
    """Run ``parse`` over the tar ``chunks`` in a worker thread. Returns (its result, True), or
    (None, False) once more than ``budget`` bytes arrived (what ``parse`` collected so far is
    kept by the caller). Past ``FILE_DEADLINE`` it raises TimeoutError; the stream is closed in
    every case (which stops the box's side)."""
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + limits.FILE_DEADLINE
    stop = threading.Event()
    state: dict[str, Any] = {"buf": memoryview(b""), "total": 0}

    def read(n: int) -> bytes:
        if not len(state["buf"]):
            remaining = deadline - time.monotonic()
            if stop.is_set() or remaining <= 0:
                raise TimeoutError(f"reading the box's files took longer than {limits.FILE_DEADLINE:g}s")
            fut = asyncio.run_coroutine_threadsafe(_next(chunks), loop)
            try:
                chunk = fut.result(remaining)
            except concurrent.futures.TimeoutError:
                fut.cancel()
                raise TimeoutError(f"reading the box's files took longer than {limits.FILE_DEADLINE:g}s") from None
            if chunk is None:
                return b""
            state["total"] += len(chunk)
            if state["total"] > budget:
                raise _OverBudget
            state["buf"] = memoryview(chunk)
        out = bytes(state["buf"][:n])
        state["buf"] = state["buf"][n:]
        return out

    def work() -> tuple[T | None, bool]:
        try:
            return parse(TarReader(read)), True
        except _OverBudget:
            return None, False

    task = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        return await asyncio.shield(task)
    finally:
        stop.set()
        if task.done():
            await _close(chunks)
        else:  # cancelled while the thread reads: close the stream once it is done with it
            task.add_done_callback(lambda t: (t.cancelled() or t.exception(), asyncio.ensure_future(_close(chunks))))


async def _next(chunks: AsyncGenerator[bytes, None]) -> bytes | None:
    return await anext(chunks, None)


async def _close(chunks: AsyncGenerator[bytes, None]) -> None:
    with contextlib.suppress(Exception):
        await chunks.aclose()
