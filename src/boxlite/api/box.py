"""``Box``: a handle on one box, used to start, stop, run commands and copy files.

The same class for every backend (this machine, a server): it keeps only the box's last known
information and what this handle counted; everything else is a call to its runtime's backend.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from typing import TYPE_CHECKING, Any

from ..backends.base import Backend, ExecCounters, ExecRequest
from ..errors import BoxliteError, ConfigError, NotFoundError
from ..runtime.config import check_stop_timeout
from . import options
from .execution import Execution
from .later import ATTACH, unsupported
from .network import NetworkHandle
from .options import CloneOptions, CopyOptions, ExportOptions
from .results import BoxInfo, BoxMetrics
from .snapshots import SnapshotHandle

if TYPE_CHECKING:
    from .runtime import Boxlite


class Box:
    """One box. Cheap to create; all state lives in the runtime (its home, or its server)."""

    def __init__(self, runtime: Boxlite, info: BoxInfo) -> None:
        self._runtime = runtime
        self._info = info
        self._counted = ExecCounters()

    @property
    def _backend(self) -> Backend:
        return self._runtime._backend

    # --- identity and info ---------------------------------------------------------------
    @property
    def id(self) -> str:
        return self._info.id

    @property
    def name(self) -> str | None:
        return self._info.name

    @property
    def memory_mib(self) -> int | None:
        """The box's memory limit (None: the engine's default)."""
        value = self._info.memory_mib
        return int(value) if value else None

    @property
    def commands_executed(self) -> int:
        return self._counted.commands

    @property
    def exec_errors(self) -> int:
        return self._counted.errors

    @property
    def bytes_sent(self) -> int:
        return self._counted.bytes_sent

    @property
    def bytes_received(self) -> int:
        return self._counted.bytes_received

    def info(self) -> BoxInfo:
        """Current information (also awaitable: ``await box.info()``)."""
        self._info = self._backend.info(self.id)
        return self._info

    def __repr__(self) -> str:
        return f'{type(self).__name__}(id="{self.id}")'

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self, detach: bool | None = None) -> None:
        """Start the box (no-op when running). ``detach`` changes whether the box outlives
        this process from now on (e.g. ``boxlite start`` of a box created in the foreground)."""
        self._info = await self._backend.start(self.id, detach)

    async def stop(self, timeout: float | None = None) -> None:
        """Stop all processes; the writable layer is kept (auto_remove=True removes the box).
        Stopping again is harmless, also after auto_remove took the box away. ``timeout``:
        seconds between SIGTERM and SIGKILL (None: 10; 0: SIGKILL at once; negative: no limit)."""
        check_stop_timeout(timeout)  # every backend (REST and Ray too): a ConfigError before anything is sent
        try:
            await self._backend.stop(self.id, timeout)
        except NotFoundError:
            if not self._info.auto_remove:
                raise

    async def pause(self, to_disk: bool = False) -> None:
        """Freeze every process of the running box where it is, memory kept: it uses no CPU
        until :meth:`resume`; exec on it raises ``InvalidStateError`` (unless ``auto_resume``).
        ``to_disk``: save the memory in the box's dir and free it (VM engine; the box may then
        be resumed by another process, after this one ended)."""
        self._info = await self._backend.pause(self.id, to_disk)

    async def signal_main(self, signal: int) -> None:
        """Send ``signal`` (a number 1..64) to the box's main process only, as ``docker kill -s``
        does; the box goes on unless that process ends of it. ``InvalidStateError`` when the
        box is not running or has no main process (``entrypoint``/``cmd``)."""
        await self._backend.signal_main(self.id, signal)

    async def fork(self, n: int = 1) -> list[Box]:
        """``n`` new running boxes, each going on from this box's memory and disk as they are
        now (this box is paused meanwhile, then goes on). VM engine; see docs/pause.md."""
        infos = await self._backend.fork(self.id, n)
        return [type(self)(self._runtime, info) for info in infos]

    async def resume(self, detach: bool | None = None) -> None:
        """Continue a paused box: its processes go on from where they were. ``detach``: a box
        paused to disk is restored by this process and, unless detached, ends with it."""
        self._info = await self._backend.resume(self.id, detach)

    async def __aenter__(self) -> Box:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.stop()
        except NotFoundError:
            pass

    # --- exec -----------------------------------------------------------------------------
    async def exec(
        self,
        command: str,
        args: list[str] | None = None,
        env: Any = None,
        tty: bool = False,
        user: str | None = None,
        timeout_secs: float | None = None,
        cwd: str | None = None,
        *,
        stdin: bool = True,
        rows: int = 24,
        cols: int = 80,
    ) -> Execution:
        """Run ``command args...`` in the box (starting it if needed) and return at once."""
        request = ExecRequest(command, list(args or []), env, tty, user, timeout_secs, cwd, stdin, rows, cols)
        await self._backend.ready(self.id)  # failing to start the box is not an exec error
        try:
            started = await self._backend.exec(self.id, request)
        except BoxliteError:
            self._count_exec(error=True)
            raise
        return Execution(self, started.channel, started.exec_id)

    async def exec_detached(
        self, command: str, args: list[str] | None = None, env: Any = None, user: str | None = None,
        cwd: str | None = None,
    ) -> int:  # fmt: skip
        """Start ``command args...`` in the box and leave it running (``boxlite exec -d``, docker's
        ``exec -d``); returns its pid in the box. Nobody reads its output: it goes to the box's
        ``exec.log`` (capped and rotated as the main process's log), so a chatty process never
        blocks; a box stop ends it."""
        request = ExecRequest(command, list(args or []), env, False, user, None, cwd, False)
        await self._backend.ready(self.id)
        try:
            pid = await self._backend.exec_detached(self.id, request)
        except BoxliteError:
            self._count_exec(error=True)
            raise
        self._count_exec(error=False)
        return pid

    def _count_exec(self, error: bool) -> None:
        self._counted.commands += 1
        self._runtime._counted.commands += 1
        if error:
            self._counted.errors += 1
            self._runtime._counted.errors += 1
        self._backend.count(self.id, commands=1, errors=int(error))

    # --- files ----------------------------------------------------------------------------
    async def copy_in(self, host_path: str, container_dest: str, copy_options: CopyOptions | None = None) -> None:
        """Copy a host file or directory into the box (``docker cp`` semantics)."""
        from .archive import host_archive  # tar machinery only for copies, not on every import

        host_path, container_dest = options.host_path(host_path, "copy_in source"), _box_path(container_dest)
        opts = copy_options or CopyOptions()
        async with host_archive(host_path, opts.follow_symlinks) as (name, chunks):
            await self.copy_in_tar(chunks, container_dest, name, opts.include_parent, opts.overwrite)

    async def copy_in_tar(
        self, chunks: AsyncIterable[bytes], dest: str, name: str, include_parent: bool = True, overwrite: bool = True
    ) -> None:
        """Extract a tar stream (top-level member ``name``) at ``dest`` in the box."""
        await self._backend.ready(self.id)
        failed = True
        try:
            await self._backend.copy_in(self.id, self._sent(chunks), dest, name, include_parent, overwrite)
            failed = False
        finally:
            self._count_exec(error=failed)

    async def _sent(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            self._counted.bytes_sent += len(chunk)
            self._backend.count(self.id, sent=len(chunk))
            yield chunk

    async def copy_out(self, container_src: str, host_dest: str, copy_options: CopyOptions | None = None) -> None:
        """Copy a file or directory out of the box. Extraction refuses anything that would land
        outside ``host_dest`` and bounds what the box can write (see ``fsutil.extract``)."""
        from .archive import extract_stream, member_name

        host_dest, container_src = options.host_path(host_dest, "copy_out destination"), _box_path(container_src)
        opts = copy_options or CopyOptions()
        name = member_name(container_src)
        await extract_stream(self.copy_out_tar(container_src, opts.follow_symlinks), host_dest, name, opts)

    async def copy_out_tar(self, src: str, follow_symlinks: bool = False) -> AsyncGenerator[bytes, None]:
        """A tar stream of ``src`` (top-level member: its base name). Raises NotFoundError
        before the first chunk when ``src`` does not exist. ``follow_symlinks``: archive what
        links inside ``src`` point to (resolved in the box) instead of the links."""
        from .archive import member_name

        await self._backend.ready(self.id)
        chunks = self._backend.copy_out(self.id, src, member_name(src), follow_symlinks)
        try:
            async for chunk in chunks:
                self._counted.bytes_received += len(chunk)
                self._backend.count(self.id, received=len(chunk))
                yield chunk
        except BoxliteError:
            self._count_exec(error=True)
            raise
        finally:  # also when the consumer gave up: the backend stops the box's side
            await chunks.aclose()
        self._count_exec(error=False)

    # --- metrics --------------------------------------------------------------------------
    async def metrics(self) -> BoxMetrics:
        return await self._backend.box_metrics(self.id, self._counted)

    # --- BoxLite names of later features (raise UnsupportedOptionError: api/later.py) -------
    async def remove(self, force: bool = True) -> None:
        """Delete the box and its data (stopping it first)."""
        await self._runtime.remove(self.id, force)

    @property
    def snapshot(self) -> SnapshotHandle:
        return SnapshotHandle(self)

    @property
    def network(self) -> NetworkHandle:
        return NetworkHandle(self)

    async def attach(self, execution_id: str | None = None) -> Execution:
        unsupported(ATTACH)

    async def export(self, *, dest: str, options: ExportOptions | None = None) -> str:
        """Write the box (config, disk, image unless ``include_image=False``) to one ``.boxlite``
        archive; ``dest`` is a directory (``<name or id>.boxlite`` in it) or a file path. A running
        box is frozen while its writable layer is copied. Returns the archive's path."""
        return await self._backend.export(self.id, dest, (options or ExportOptions()).check())

    async def clone_box(self, *, options: CloneOptions | None = None, name: str | None = None) -> Box:
        """A new, independent, stopped box with this box's disk as it is now (a running box is
        frozen for a consistent copy, then continues)."""
        info = await self._backend.clone(self.id, name)
        return self._runtime._box_type(self._runtime, info)


def _box_path(path: Any) -> str:
    """A path in the box: a string (or ``os.PathLike``, e.g. ``PurePosixPath``) without NUL bytes."""
    try:
        text = os.fspath(path)
    except TypeError:
        text = None
    if not isinstance(text, str) or "\0" in text:
        raise ConfigError(f"a path in the box must be a string without NUL bytes, got {path!r}")
    return text
