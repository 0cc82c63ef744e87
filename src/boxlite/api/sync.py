"""Synchronous facade: the async API driven from a private event-loop thread.

``SyncBoxlite`` (``.images``), ``SyncBox``, ``SyncExecution`` (+ its streams), ``SyncSimpleBox``
and ``SyncCodeBox`` mirror their async counterparts method for method, for scripts that do not
use asyncio. Unlike BoxLite (greenlet), no extra dependency: one daemon thread runs the loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any, Self, TypeVar

from ..errors import InvalidStateError
from ..images.types import ImageInfo
from .box import Box
from .execution import ExecStdin, ExecStream, Execution
from .options import BoxOptions, CloneOptions, CopyOptions, ExportOptions, Options, SnapshotOptions
from .results import BoxInfo, BoxMetrics, ExecResult, ExecStatus, RuntimeMetrics, SnapshotInfo
from .runtime import Boxlite
from .simplebox import CodeBox, SimpleBox
from .snapshots import SnapshotHandle
from .sync_network import SyncBoxTunnel, SyncNetworkHandle
from .volumes import VolumeInfo

T = TypeVar("T")


class _Loop:
    """An event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="boxlite-sync", daemon=True)
        self.thread.start()

    def run(self, coro: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(_wrap(coro), self.loop).result()

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        while True:
            try:
                yield self.run(agen.__anext__())
            except StopAsyncIteration:
                return

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


async def _wrap(coro: Awaitable[T]) -> T:
    return await coro


class _Id(str):
    """An id that is also callable: BoxLite reads ``execution.id``, our older code ``execution.id()``."""

    def __call__(self) -> str:
        return str(self)


class _SyncStream:
    """A box output stream, iterated line by line from synchronous code."""

    def __init__(self, loop: _Loop, stream: ExecStream) -> None:
        self._loop, self._stream = loop, stream

    def __iter__(self) -> Iterator[str]:
        return self._loop.iterate(self._stream.__aiter__())

    def read(self) -> str:
        return self._loop.run(self._stream.read())


class SyncExecStdout(_SyncStream):
    pass


class SyncExecStderr(_SyncStream):
    pass


class SyncExecStdin:
    def __init__(self, loop: _Loop, stdin: ExecStdin) -> None:
        self._loop, self._stdin = loop, stdin

    def send_input(self, data: bytes | str) -> None:
        self._loop.run(self._stdin.send_input(data))

    def write(self, data: bytes | str) -> None:
        self._loop.run(self._stdin.write(data))

    def close(self) -> None:
        self._loop.run(self._stdin.close())


class SyncExecution:
    def __init__(self, loop: _Loop, execution: Execution) -> None:
        self._loop, self._ex = loop, execution
        self._stdin: SyncExecStdin | None = None

    @property
    def id(self) -> _Id:
        return _Id(self._ex.id())

    def stdout(self) -> SyncExecStdout:
        return SyncExecStdout(self._loop, self._ex.stdout())

    def stderr(self) -> SyncExecStderr:
        return SyncExecStderr(self._loop, self._ex.stderr())

    def stdin(self) -> SyncExecStdin:
        if self._stdin is None:
            self._stdin = SyncExecStdin(self._loop, self._ex.stdin())
        return self._stdin

    def send_input(self, data: bytes | str) -> None:
        self.stdin().send_input(data)

    def close_stdin(self) -> None:
        self.stdin().close()

    def wait(self) -> ExecStatus:
        return self._loop.run(self._ex.wait())

    def kill(self, sig: int | None = None) -> None:
        self._loop.run(self._ex.kill(sig))

    def signal(self, sig: int) -> None:
        self._loop.run(self._ex.signal(sig))

    def resize_tty(self, rows: int, cols: int) -> None:
        self._loop.run(self._ex.resize_tty(rows, cols))


class SyncImageHandle:
    """``SyncBoxlite.images``: the runtime's image store."""

    def __init__(self, loop: _Loop, rt: Boxlite) -> None:
        self._loop, self._images = loop, rt.images

    def pull(self, reference: str) -> ImageInfo:
        return self._loop.run(self._images.pull(reference))

    def list(self) -> list[ImageInfo]:
        return self._loop.run(self._images.list())

    def get(self, reference: str) -> ImageInfo | None:
        return self._loop.run(self._images.get(reference))

    def remove(self, reference: str, force: bool = False) -> None:
        self._loop.run(self._images.remove(reference, force))


class SyncVolumeHandle:
    """``SyncBoxlite.volumes``: the runtime's named volumes (api/volumes.py)."""

    def __init__(self, loop: _Loop, rt: Boxlite) -> None:
        self._loop, self._volumes = loop, rt.volumes

    def create(self) -> VolumeInfo:
        return self._loop.run(self._volumes.create())

    def list(self) -> list[VolumeInfo]:
        return self._loop.run(self._volumes.list())

    def get(self, id: str) -> VolumeInfo:
        return self._loop.run(self._volumes.get(id))

    def remove(self, id: str, force: bool = False) -> None:
        self._loop.run(self._volumes.remove(id, force))


class SyncSnapshotHandle:
    """``SyncBox.snapshot``: the box's disk snapshots (api/snapshots.py)."""

    def __init__(self, loop: _Loop, handle: SnapshotHandle) -> None:
        self._loop, self._handle = loop, handle

    def create(self, name: str | None = None, options: SnapshotOptions | None = None) -> SnapshotInfo:
        return self._loop.run(self._handle.create(name, options))

    def list(self) -> list[SnapshotInfo]:
        return self._loop.run(self._handle.list())

    def get(self, name: str) -> SnapshotInfo | None:
        return self._loop.run(self._handle.get(name))

    def remove(self, name: str) -> None:
        self._loop.run(self._handle.remove(name))

    def restore(self, name: str) -> None:
        self._loop.run(self._handle.restore(name))


class SyncBox:
    def __init__(self, loop: _Loop, box: Box) -> None:
        self._loop, self._box = loop, box

    @property
    def id(self) -> str:
        return self._box.id

    @property
    def name(self) -> str | None:
        return self._box.name

    def info(self) -> BoxInfo:
        return self._box.info()

    def start(self) -> None:
        self._loop.run(self._box.start())

    def stop(self) -> None:
        self._loop.run(self._box.stop())

    def pause(self, to_disk: bool = False) -> None:
        self._loop.run(self._box.pause(to_disk))

    def resume(self, detach: bool | None = None) -> None:
        self._loop.run(self._box.resume(detach))

    def signal_main(self, signal: int) -> None:
        self._loop.run(self._box.signal_main(signal))

    def exec_detached(
        self, command: str, args: list[str] | None = None, env: Any = None, user: str | None = None,
        cwd: str | None = None,
    ) -> int:  # fmt: skip
        return self._loop.run(self._box.exec_detached(command, args, env, user, cwd))

    @property
    def network(self) -> SyncNetworkHandle:
        return SyncNetworkHandle(self._loop.run, self._box.network)

    def tunnel(self, port: int) -> SyncBoxTunnel:
        return self.network.tunnel(port)

    def exec(self, command: str, args: list[str] | None = None, env: Any = None, tty: bool = False,
             **kwargs: Any) -> SyncExecution:  # fmt: skip
        return SyncExecution(self._loop, self._loop.run(self._box.exec(command, args, env, tty, **kwargs)))

    def copy_in(self, host_path: str, container_dest: str, copy_options: CopyOptions | None = None) -> None:
        self._loop.run(self._box.copy_in(host_path, container_dest, copy_options))

    def copy_out(self, container_src: str, host_dest: str, copy_options: CopyOptions | None = None) -> None:
        self._loop.run(self._box.copy_out(container_src, host_dest, copy_options))

    def metrics(self) -> BoxMetrics:
        return self._loop.run(self._box.metrics())

    @property
    def snapshot(self) -> SyncSnapshotHandle:
        return SyncSnapshotHandle(self._loop, self._box.snapshot)

    def export(self, *, dest: str, options: ExportOptions | None = None) -> str:
        return self._loop.run(self._box.export(dest=dest, options=options))

    def clone_box(self, *, options: CloneOptions | None = None, name: str | None = None) -> SyncBox:
        return SyncBox(self._loop, self._loop.run(self._box.clone_box(options=options, name=name)))

    def fork(self, n: int = 1) -> list[SyncBox]:
        return [SyncBox(self._loop, box) for box in self._loop.run(self._box.fork(n))]

    def __enter__(self) -> SyncBox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SyncBoxlite:
    """``Boxlite`` for synchronous code. Use as a context manager or call ``start``/``stop``."""

    def __init__(self, options: Options | None = None) -> None:
        self._options = options
        self._loop: _Loop | None = None
        self._rt: Boxlite | None = None

    @staticmethod
    def default() -> SyncBoxlite:
        """A facade over the process-wide ``Boxlite.default()`` runtime (set by ``init_default``)."""
        return SyncBoxlite(None)

    @staticmethod
    def init_default(options: Options) -> None:
        Boxlite.init_default(options)

    def start(self) -> SyncBoxlite:
        if self._loop is None:
            self._loop = _Loop()
            self._rt = self._loop.run(_make_runtime(self._options))
        return self

    def stop(self) -> None:
        if self._loop is not None and self._rt is not None:
            self._loop.run(self._rt.shutdown())
            self._loop.close()
        self._loop = self._rt = None

    def __enter__(self) -> SyncBoxlite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _ready(self) -> tuple[_Loop, Boxlite]:
        if self._loop is None or self._rt is None:
            raise RuntimeError("SyncBoxlite not started: use 'with SyncBoxlite(...)' or call start()")
        return self._loop, self._rt

    @property
    def runtime(self) -> Boxlite:
        return self._ready()[1]

    @property
    def images(self) -> SyncImageHandle:
        return SyncImageHandle(*self._ready())

    @property
    def volumes(self) -> SyncVolumeHandle:
        return SyncVolumeHandle(*self._ready())

    def get_info(self, id_or_name: str) -> BoxInfo | None:
        loop, rt = self._ready()
        return loop.run(rt.get_info(id_or_name))

    def create(self, options: BoxOptions, name: str | None = None) -> SyncBox:
        loop, rt = self._ready()
        return SyncBox(loop, loop.run(rt.create(options, name)))

    def get(self, id_or_name: str) -> SyncBox | None:
        loop, rt = self._ready()
        box = loop.run(rt.get(id_or_name))
        return None if box is None else SyncBox(loop, box)

    def get_or_create(self, options: BoxOptions, name: str | None = None) -> tuple[SyncBox, bool]:
        loop, rt = self._ready()
        box, created = loop.run(rt.get_or_create(options, name))
        return SyncBox(loop, box), created

    def list_info(self) -> list[BoxInfo]:
        loop, rt = self._ready()
        return loop.run(rt.list_info())

    def remove(self, id_or_name: str, force: bool = False) -> None:
        loop, rt = self._ready()
        loop.run(rt.remove(id_or_name, force))

    def metrics(self) -> RuntimeMetrics:
        loop, rt = self._ready()
        return loop.run(rt.metrics())

    def import_box(
        self, archive_path: str, name: str | None = None, *, untrusted: bool = False, engine: str | None = None
    ) -> SyncBox:
        loop, rt = self._ready()
        return SyncBox(loop, loop.run(rt.import_box(archive_path, name, untrusted=untrusted, engine=engine)))

    def shutdown(self, timeout: float | None = None) -> None:
        loop, rt = self._ready()
        loop.run(rt.shutdown(timeout))


async def _make_runtime(options: Options | None) -> Boxlite:
    return Boxlite(options) if options is not None else Boxlite.default()


class SyncSimpleBox:
    """``SimpleBox`` for synchronous code; owns a ``SyncBoxlite`` unless given one."""

    _box_class: type[SimpleBox] = SimpleBox

    def __init__(self, image: str | None = None, rootfs_path: str | None = None, memory_mib: int | None = None,
                 cpus: float | None = None, runtime: SyncBoxlite | None = None, name: str | None = None,
                 auto_remove: bool = True, reuse_existing: bool = False, **kwargs: Any) -> None:  # fmt: skip
        self._own = runtime is None
        self._sync_rt = runtime or SyncBoxlite(None)
        self._args = dict(image=image, rootfs_path=rootfs_path, memory_mib=memory_mib, cpus=cpus, name=name,
                          auto_remove=auto_remove, reuse_existing=reuse_existing, **kwargs)  # fmt: skip
        self._box: SimpleBox | None = None

    def __enter__(self) -> Self:
        loop, rt = self._sync_rt.start()._ready()
        self._box = self._box_class(runtime=rt, **self._args)
        loop.run(self._box.__aenter__())
        return self

    def start(self) -> Self:
        return self.__enter__()

    @property
    def name(self) -> str | None:
        return None if self._box is None else self._box.name

    @property
    def network(self) -> SyncNetworkHandle:
        if self._box is None:
            raise InvalidStateError("box not started")
        return SyncNetworkHandle(self._sync_rt._ready()[0].run, self._box.network)

    def tunnel(self, port: int) -> SyncBoxTunnel:
        return self.network.tunnel(port)

    @property
    def created(self) -> bool | None:
        """True: this object created the box; False: it reused an existing one; None: not started."""
        return None if self._box is None else self._box.created

    def _run(self, coro: Awaitable[T]) -> T:
        if self._box is None:
            raise InvalidStateError("box not started: use 'with SyncSimpleBox(...) as box:' or call start()")
        return self._sync_rt._ready()[0].run(coro)

    def __exit__(self, *exc: object) -> None:
        loop, _ = self._sync_rt._ready()
        if self._box is not None:
            loop.run(self._box.stop())
        if self._own:
            self._sync_rt.stop()

    @property
    def id(self) -> str:
        assert self._box is not None
        return self._box.id

    def exec(self, cmd: str, *args: str, env: dict[str, str] | None = None, user: str | None = None,
             timeout: float | None = None, cwd: str | None = None) -> ExecResult:  # fmt: skip
        assert self._box is not None, "use 'with SyncSimpleBox(...) as box:'"
        loop, _ = self._sync_rt._ready()
        return loop.run(self._box.exec(cmd, *args, env=env, user=user, timeout=timeout, cwd=cwd))

    def copy_in(self, host_path: str, container_dest: str) -> None:
        assert self._box is not None
        self._sync_rt._ready()[0].run(self._box.copy_in(host_path, container_dest))

    def copy_out(self, container_src: str, host_dest: str) -> None:
        assert self._box is not None
        self._sync_rt._ready()[0].run(self._box.copy_out(container_src, host_dest))

    def info(self) -> BoxInfo:
        assert self._box is not None
        return self._box.info()

    def metrics(self) -> BoxMetrics:
        assert self._box is not None
        return self._sync_rt._ready()[0].run(self._box.metrics())

    def stop(self) -> None:
        if self._box is not None:
            self._sync_rt._ready()[0].run(self._box.stop())


class SyncCodeBox(SyncSimpleBox):
    """``CodeBox`` for synchronous code: ``run`` Python code, ``install_package``."""

    _box_class = CodeBox

    def __init__(self, image: str | None = None, memory_mib: int | None = None, cpus: float | None = None,
                 runtime: SyncBoxlite | None = None, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(image=image, memory_mib=memory_mib, cpus=cpus, runtime=runtime, **kwargs)
        if self._args.get("rootfs_path") is None:
            self._args.pop("rootfs_path")  # CodeBox reads its presence as "no image"

    def _code(self) -> CodeBox:
        assert isinstance(self._box, CodeBox)
        return self._box

    def run(self, code: str, timeout: float | None = None) -> str:
        return self._run(self._code().run(code, timeout))

    def run_script(self, script_path: str) -> str:
        return self._run(self._code().run_script(script_path))

    def install_package(self, package: str) -> str:
        return self._run(self._code().install_package(package))

    def install_packages(self, *packages: str) -> str:
        return self._run(self._code().install_packages(*packages))
