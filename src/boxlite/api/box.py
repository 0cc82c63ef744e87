"""``Box``: a handle on one box, used to start, stop, run commands and copy files."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import time
from collections.abc import AsyncGenerator, AsyncIterable
from typing import TYPE_CHECKING, Any

from ..errors import BoxliteError, InvalidStateError, NotFoundError
from ..runtime.state import BoxRecord
from .archive import extract_stream, host_archive, member_name
from .execution import Execution
from .options import CopyOptions
from .results import BoxInfo, BoxMetrics, BoxStateInfo, iso

if TYPE_CHECKING:
    from .runtime import Boxlite


class Box:
    """One box. Cheap to create; all state lives in the runtime home."""

    def __init__(self, runtime: Boxlite, record: BoxRecord) -> None:
        self._runtime = runtime
        self._rec = record
        self.commands_executed = 0
        self.exec_errors = 0
        self.bytes_sent = 0
        self.bytes_received = 0

    # --- identity and info ---------------------------------------------------------------
    @property
    def id(self) -> str:
        return self._rec.id

    @property
    def name(self) -> str | None:
        return self._rec.name

    @property
    def memory_mib(self) -> int | None:
        """The box's memory limit (None: the engine's default)."""
        value = self._rec.options.get("memory_mib")
        return int(value) if value else None

    def _record(self) -> BoxRecord:
        self._rec = self._runtime._core.record(self._rec.id)
        return self._rec

    def info(self) -> BoxInfo:
        """Current information (also awaitable: ``await box.info()``)."""
        return record_info(self._record())

    def __repr__(self) -> str:
        return f'Box(id="{self.id}")'

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self, detach: bool | None = None) -> None:
        """Start the box (no-op when running). ``detach`` changes whether the box outlives
        this process from now on (e.g. ``boxlite start`` of a box created in the foreground)."""
        if detach is not None:
            self._runtime._core.set_detach(self.id, bool(detach))
        await self._runtime._core.start(self.id)
        self._record()

    async def stop(self, timeout: float | None = None) -> None:
        """Stop all processes; the writable layer is kept (auto_remove=True removes the box).
        Stopping again is harmless, also after auto_remove took the box away."""
        try:
            await self._runtime._core.stop(self.id, timeout)
        except NotFoundError:
            if not self._rec.auto_remove:
                raise

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
        client = await self._client()
        rec = self._rec
        argv = [command, *(args or [])]
        body = self._runtime._core.exec_body(
            rec, argv, env, cwd, user,
            tty=bool(tty), rows=rows, cols=cols, timeout=timeout_secs, stdin=stdin,
        )  # fmt: skip
        return await self._start_exec(client, body, shlex.join(argv))

    async def _client(self) -> Any:
        """The live agent connection; starts the box first if it is not running."""
        core = self._runtime._core
        client = core.clients.get(self.id)
        if client is None or client.closed or self._rec.state != "running":
            core.check_open()
            rec = self._record()
            ended = core.main_exit(self.id) if rec.state in ("running", "exited") else None
            if ended is not None:  # starting it would run its main process again: not as a side effect
                raise InvalidStateError(
                    f"box {self.id} has exited (its main process ended with status {ended.exit_code}); "
                    "start it again explicitly (box.start(), 'boxlite start') to run it again"
                )
            client = await core.start(self.id)
            self._rec = core.record(self.id)
        return client

    async def _start_exec(self, client: Any, body: dict[str, Any], label: str) -> Execution:
        try:
            channel = await client.exec(body, label)
        except BoxliteError:
            self._count_exec(error=True)
            raise
        return Execution(self, channel, f"{self.id}-{channel.channel}")

    def _count_exec(self, error: bool) -> None:
        self.commands_executed += 1
        self._runtime._commands += 1
        if error:
            self.exec_errors += 1
            self._runtime._exec_errors += 1

    # --- files ----------------------------------------------------------------------------
    async def copy_in(self, host_path: str, container_dest: str, copy_options: CopyOptions | None = None) -> None:
        """Copy a host file or directory into the box (``docker cp`` semantics)."""
        opts = copy_options or CopyOptions()
        async with host_archive(host_path, opts.follow_symlinks) as (name, chunks):
            await self.copy_in_tar(chunks, container_dest, name, opts.include_parent)

    async def copy_in_tar(
        self, chunks: AsyncIterable[bytes], dest: str, name: str, include_parent: bool = True
    ) -> None:
        """Extract a tar stream (top-level member ``name``) at ``dest`` in the box."""
        execution = await self._start_exec(
            await self._client(),
            {"builtin": "untar", "builtin_args": {"dest": dest, "name": name, "into": include_parent}},
            f"copy_in {dest}",
        )
        stdin = execution.stdin()
        errors = asyncio.ensure_future(execution.stderr().read())
        try:
            async for chunk in chunks:
                if chunk:
                    await stdin.send_input(chunk)
                    self.bytes_sent += len(chunk)
            await stdin.close()
        except BaseException:
            await execution.kill()
            raise
        finally:
            status = await execution.wait()
            message = (await errors).strip()
        if status.exit_code != 0:
            raise BoxliteError(f"copy_in to {dest} failed: {message or status.error_message}")

    async def copy_out(self, container_src: str, host_dest: str, copy_options: CopyOptions | None = None) -> None:
        """Copy a file or directory out of the box. Extraction refuses anything that would land
        outside ``host_dest`` and bounds what the box can write (see ``fsutil.extract``)."""
        opts = copy_options or CopyOptions()
        name = member_name(container_src)
        await extract_stream(self.copy_out_tar(container_src, opts.follow_symlinks), host_dest, name, opts)

    async def copy_out_tar(self, src: str, follow_symlinks: bool = False) -> AsyncGenerator[bytes, None]:
        """A tar stream of ``src`` (top-level member: its base name). Raises NotFoundError
        before the first chunk when ``src`` does not exist. ``follow_symlinks``: archive what
        links inside ``src`` point to (resolved in the box) instead of the links."""
        name = member_name(src)
        args = {"src": src, "name": name, "follow_symlinks": follow_symlinks}
        execution = await self._start_exec(
            await self._client(),
            {"builtin": "tar", "builtin_args": args, "stdin": False},
            f"copy_out {src}",
        )
        out = execution.stdout().bytes()
        errors = asyncio.ensure_future(execution.stderr().read())
        try:
            first = await anext(out, None)
            if first is not None:
                self.bytes_received += len(first)
                yield first
                async for chunk in out:
                    self.bytes_received += len(chunk)
                    yield chunk
        except BaseException:  # the consumer gave up (a limit, an unsafe entry, cancelled): stop the tar
            with contextlib.suppress(BoxliteError):
                await execution.kill()
            raise
        if first is None:  # nothing at all: the builtin failed before writing
            status = await execution.wait()
            message = (await errors).strip()
            if status.exit_code == 2 and "no such file" in message:
                raise NotFoundError(f"no such file or directory in box: {src}")
            raise BoxliteError(f"copy_out of {src} failed: {message or status.error_message}")
        status = await execution.wait()
        if status.exit_code != 0:
            message = (await errors).strip()
            raise BoxliteError(f"copy_out of {src} failed: {message or status.error_message}")

    # --- metrics --------------------------------------------------------------------------
    async def metrics(self) -> BoxMetrics:
        rec = self._record()
        core = self._runtime._core
        engine = core.engine_for(rec)
        raw = engine.metrics(core.spec(rec), None) if rec.state == "running" else {}
        cpu_ns = raw.get("cpu_usage_ns")
        cpu_percent = None
        if cpu_ns is not None and rec.started_at:
            wall = max(time.time() - rec.started_at, 1e-3)
            cpu_percent = round(cpu_ns / 1e9 / wall * 100, 2)
        return BoxMetrics(
            commands_executed_total=self.commands_executed,
            exec_errors_total=self.exec_errors,
            bytes_sent_total=self.bytes_sent,
            bytes_received_total=self.bytes_received,
            total_create_duration_ms=rec.boot_ms,
            guest_boot_duration_ms=rec.boot_ms,
            cpu_percent=cpu_percent,
            cpu_time_ms=None if cpu_ns is None else cpu_ns / 1e6,
            memory_bytes=_int(raw.get("memory_bytes")),
            memory_peak_bytes=_int(raw.get("memory_peak_bytes")),
            pids=_int(raw.get("pids")),
            extra={k: v for k, v in raw.items() if k not in ("memory_bytes", "memory_peak_bytes", "pids")},
        )


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def record_info(rec: BoxRecord) -> BoxInfo:
    return BoxInfo(
        id=rec.id,
        name=rec.name,
        state=BoxStateInfo(
            status=rec.state,
            running=rec.state == "running",
            pid=rec.pid,
            exit_code=rec.exit_code if rec.state == "exited" else None,
            finished_at=iso(rec.finished_at) if rec.state == "exited" else None,
        ),
        created_at=iso(rec.created_at) or "",
        started_at=iso(rec.started_at),
        image=rec.image,
        cpus=rec.options.get("cpus"),
        memory_mib=rec.options.get("memory_mib"),
        engine=rec.engine,
        detach=rec.detach,
        auto_remove=rec.auto_remove,
        image_config=dict(rec.image_config or {}),
    )
