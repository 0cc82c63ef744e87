"""High-level boxes: ``SimpleBox`` (create + start + exec in one ``async with``) and friends."""

from __future__ import annotations

import asyncio
import shlex
from typing import Any

from ..errors import BoxliteError, InvalidStateError
from .box import Box
from .network import BoxTunnel, NetworkHandle
from .options import BoxOptions, CopyOptions
from .results import BoxInfo, BoxMetrics, ExecResult
from .runtime import Boxlite

NOT_STARTED = "Box not started. Use 'async with SimpleBox(...) as box:' or call 'await box.start()' first."


class SimpleBox:
    """A box that exists for one ``async with`` block: created and started on entry,
    stopped (and removed, with ``auto_remove``) on exit. Without ``image``/``rootfs_path`` it
    uses the default image (busybox + python3 from Debian packages, no registry needed)."""

    def __init__(
        self,
        image: str | None = None,
        rootfs_path: str | None = None,
        memory_mib: int | None = None,
        cpus: float | None = None,
        runtime: Boxlite | None = None,
        name: str | None = None,
        auto_remove: bool | None = None,
        reuse_existing: bool = False,
        **box_options: Any,
    ) -> None:
        # Neither image nor rootfs_path: the runtime's default image (offline, with python3).
        self._options = BoxOptions(
            image=image,
            rootfs_path=rootfs_path,
            memory_mib=memory_mib,
            cpus=cpus,
            auto_remove=auto_remove,
            **box_options,
        )
        self._runtime = runtime
        self._name = name
        self._reuse = reuse_existing
        self._box: Box | None = None
        self._created: bool | None = None

    # --- lifecycle ------------------------------------------------------------------------
    async def __aenter__(self) -> SimpleBox:
        if self._box is None:
            runtime = self._runtime or Boxlite.default()
            if self._reuse:
                self._box, self._created = await runtime.get_or_create(self._options, self._name)
            else:
                self._box, self._created = await runtime.create(self._options, self._name), True
        await self._box.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> SimpleBox:
        return await self.__aenter__()

    async def stop(self) -> None:
        if self._box is not None:
            try:
                await self._box.stop()
            except BoxliteError:
                pass

    shutdown = stop

    @property
    def box(self) -> Box:
        if self._box is None:
            raise InvalidStateError(NOT_STARTED)
        return self._box

    @property
    def id(self) -> str:
        return self.box.id

    @property
    def name(self) -> str | None:
        return self.box.name

    @property
    def created(self) -> bool | None:
        return self._created

    @property
    def network(self) -> NetworkHandle:
        """BoxLite's tunnels: ``await box.network.tunnel(port)`` (api/network.py)."""
        return NetworkHandle(self)

    async def tunnel(self, port: int) -> BoxTunnel:
        return await self.network.tunnel(port)

    def info(self) -> BoxInfo:
        return self.box.info()

    async def metrics(self) -> BoxMetrics:
        return await self.box.metrics()

    # --- work -----------------------------------------------------------------------------
    async def exec(
        self,
        cmd: str,
        *args: str,
        env: dict[str, str] | None = None,
        user: str | None = None,
        timeout: float | None = None,
        cwd: str | None = None,
    ) -> ExecResult:
        """Run a command to completion; never raises for a non-zero exit.

        After ``timeout`` seconds the command's process group is killed and the result says
        so (``timed_out=True``, non-zero ``exit_code``), as in BoxLite: it does not raise."""
        execution = await self.box.exec(cmd, list(args), env=env, user=user, timeout_secs=timeout, cwd=cwd, stdin=False)
        out, err = execution.stdout(), execution.stderr()
        stdout, stderr = await asyncio.gather(out.read(), err.read())
        status = await execution.wait()
        message = status.error_message
        if status.timed_out and message is None:
            message = f"Command '{shlex.join([cmd, *args])}' timed out after {timeout:g} seconds"
        # A killed process reports 137; never 0 for a command that did not finish.
        code = (status.exit_code or 137) if status.timed_out else status.exit_code
        return ExecResult(code, stdout, stderr, status.timed_out, message)

    async def copy_in(
        self, host_path: str, container_dest: str, *, overwrite: bool = True,
        follow_symlinks: bool = False, include_parent: bool = True,
    ) -> None:  # fmt: skip
        await self.box.copy_in(host_path, container_dest, CopyOptions(True, overwrite, follow_symlinks, include_parent))

    async def copy_out(
        self, container_src: str, host_dest: str, *, overwrite: bool = True,
        follow_symlinks: bool = False, include_parent: bool = True,
    ) -> None:  # fmt: skip
        await self.box.copy_out(container_src, host_dest, CopyOptions(True, overwrite, follow_symlinks, include_parent))


class CodeBox(SimpleBox):
    """A box for running Python code (the image must provide ``python3``; the default image does)."""

    def __init__(self, image: str | None = None, memory_mib: int | None = None, cpus: float | None = None,
                 runtime: Boxlite | None = None, python: str = "python3", **kwargs: Any) -> None:  # fmt: skip
        super().__init__(image=image if "rootfs_path" not in kwargs else None, memory_mib=memory_mib, cpus=cpus,
                         runtime=runtime, **kwargs)  # fmt: skip
        self._python = python

    async def run(self, code: str, timeout: float | None = None) -> str:
        """Run ``code``; returns its stdout (stderr is appended when the code fails)."""
        result = await self.exec(self._python, "-c", code, timeout=timeout)
        return result.stdout if result.exit_code == 0 else result.stdout + result.stderr

    async def run_script(self, script_path: str) -> str:
        with open(script_path) as f:
            return await self.run(f.read())

    async def install_package(self, package: str) -> str:
        result = await self.exec(self._python, "-m", "pip", "install", package)
        return result.stdout + result.stderr

    async def install_packages(self, *packages: str) -> str:
        result = await self.exec(self._python, "-m", "pip", "install", *packages)
        return result.stdout + result.stderr
