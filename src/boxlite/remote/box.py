"""``RemoteBox``: the ``Box`` API over REST (same methods, same results, same errors)."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any

from ..api.archive import extract_stream, host_archive, member_name
from ..api.execution import Execution
from ..api.options import CopyOptions, env_to_dict
from ..api.results import BoxInfo, BoxMetrics
from ..errors import ExecError, NotFoundError
from .channel import RemoteChannel
from .convert import box_info

if TYPE_CHECKING:
    from .runtime import RemoteBoxlite


class RemoteBox:
    """One box of a ``boxlite serve`` server."""

    def __init__(self, runtime: RemoteBoxlite, info: BoxInfo) -> None:
        self._runtime = runtime
        self._info = info
        self.commands_executed = 0
        self.exec_errors = 0

    @property
    def _t(self) -> Any:
        return self._runtime._transport

    @property
    def _path(self) -> str:
        return f"/v1/boxes/{self._info.id}"

    @property
    def id(self) -> str:
        return self._info.id

    @property
    def name(self) -> str | None:
        return self._info.name

    def info(self) -> BoxInfo:
        """Current information (a blocking request; also awaitable: ``await box.info()``)."""
        self._info = box_info(self._t.request_sync("GET", self._path))
        return self._info

    def __repr__(self) -> str:
        return f'RemoteBox(id="{self.id}")'

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        self._info = box_info(await self._t.request("POST", f"{self._path}/start"))
        self._runtime._started(self._info)

    async def stop(self, timeout: float | None = None) -> None:
        """Stop all processes (``auto_remove`` boxes are removed)."""
        params = {} if timeout is None else {"timeout": timeout}
        await self._t.request("POST", f"{self._path}/stop", params=params)
        self._runtime._owned.discard(self.id)

    async def __aenter__(self) -> RemoteBox:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.stop()
        except NotFoundError:
            pass

    # --- exec -------------------------------------------------------------------------------
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
        argv = [command, *(args or [])]
        start = {
            "command": command, "args": argv[1:], "env": env_to_dict(env, "env"), "tty": bool(tty), "user": user,
            "timeout_secs": timeout_secs, "cwd": cwd, "stdin": stdin, "rows": rows, "cols": cols,
        }  # fmt: skip
        try:
            channel = await RemoteChannel.open(self._t, self.id, start, shlex.join(argv))
        except ExecError:
            self._count_exec(error=True)
            raise
        if not self._info.detach:
            self._runtime._owned.add(self.id)
        return Execution(self, channel, channel.id)

    def _count_exec(self, error: bool) -> None:
        """Client-side counters (the server keeps the authoritative ones in ``metrics()``)."""
        self.commands_executed += 1
        self.exec_errors += int(error)

    # --- files ------------------------------------------------------------------------------
    async def copy_in(self, host_path: str, container_dest: str, copy_options: CopyOptions | None = None) -> None:
        """Copy a host file or directory into the box (``docker cp`` semantics)."""
        opts = copy_options or CopyOptions()
        async with host_archive(host_path, opts.follow_symlinks) as (name, chunks):
            params = {"path": container_dest, "name": name, "include_parent": opts.include_parent}
            headers = {"content-type": "application/x-tar"}
            await self._t.request("PUT", f"{self._path}/archive", params=params, content=chunks, headers=headers)

    async def copy_out(self, container_src: str, host_dest: str, copy_options: CopyOptions | None = None) -> None:
        """Copy a file or directory out of the box (extracted as ``Box.copy_out`` does)."""
        opts = copy_options or CopyOptions()
        name = member_name(container_src)
        async with self._t.stream("GET", f"{self._path}/archive", params={"path": container_src}) as resp:
            await extract_stream(resp.aiter_raw(), host_dest, name, opts)

    # --- metrics ----------------------------------------------------------------------------
    async def metrics(self) -> BoxMetrics:
        return BoxMetrics(**await self._t.request("GET", f"{self._path}/metrics"))
