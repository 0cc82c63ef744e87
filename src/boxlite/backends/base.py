"""The backend interface: what ``Boxlite``/``Box`` need from wherever the boxes live.

The public API (``boxlite.api``) holds no state of its own beyond per-handle counters; every
operation goes to a ``Backend``: ``LocalBackend`` (a ``BoxRuntime`` in this process, see
``local.py``) or ``RestBackend`` (a ``boxlite serve`` server, see ``rest/``). A running command
comes back as an ``ExecChannel`` (streams, stdin with credit, control, exit future), which
``api.execution.Execution`` drives the same way whatever the backend.

Types crossing this interface are the public ones of ``api.options``/``api.results`` (leaf
modules: they import nothing from api/, backends/ or runtime/).
"""

from __future__ import annotations

import abc
import asyncio
import builtins
import signal as _signal
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from ..api.options import BoxOptions, ExportOptions
from ..api.results import BoxInfo, BoxMetrics, ExecStatus, RuntimeMetrics, SnapshotInfo, oom_message
from ..errors import BoxDiedError, ConfigError, UnsupportedOptionError
from ..images import ImageConfig, ImageInfo
from ..images.types import PullProgress
from ..runtime.config import check_argv
from ..runtime.volumes import VolumeInfo


class TunnelStream(Protocol):
    """One tunnel's bytes, as a backend hands them to ``box.network`` (api/network.py): this
    machine's agent (client/tunnel.py) or a server's WebSocket (backends/rest/tunnel.py)."""

    async def read(self) -> bytes | None: ...

    async def write(self, data: bytes) -> None: ...

    async def close_write(self) -> None: ...

    async def wait(self) -> None: ...

    async def close(self) -> None: ...


class OutputSource(Protocol):
    """One output stream of an execution; reading grants the producer more credit."""

    async def read(self) -> bytes | None: ...

    async def read_all(self) -> bytes: ...


class ExecChannel(Protocol):
    """A running command's transport (the agent connection, or the server's exec WebSocket)."""

    pid: int
    exit: asyncio.Future[dict[str, Any]]

    @property
    def stdout(self) -> OutputSource: ...

    @property
    def stderr(self) -> OutputSource: ...

    @property
    def stdin_closed(self) -> bool: ...

    async def write_stdin(self, data: bytes) -> None: ...

    async def close_stdin(self) -> None: ...

    async def control(self, body: dict[str, Any]) -> None:
        """``{"op": "kill"}``, ``{"op": "signal", "signal": n}``, ``{"op": "resize", "rows", "cols"}``."""


class StartedExec(NamedTuple):
    channel: ExecChannel
    exec_id: str


@dataclass(frozen=True)
class ExecRequest:
    """One ``Box.exec`` call, as the user gave it (``env`` is validated by the backend)."""

    command: str
    args: list[str] = field(default_factory=list)
    env: Any = None
    tty: bool = False
    user: str | None = None
    timeout_secs: float | None = None
    cwd: str | None = None
    stdin: bool = True
    rows: int = 24
    cols: int = 80

    def __post_init__(self) -> None:
        check_argv([self.command, *self.args])  # every backend: a ConfigError before anything is sent

    @property
    def argv(self) -> list[str]:
        return [self.command, *self.args]


@dataclass
class ExecCounters:
    """What one handle counted (a ``Box``'s executions, or a ``Boxlite``'s across its boxes)."""

    commands: int = 0
    errors: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0


def exit_status(body: dict[str, Any], memory_mib: int | None = None) -> ExecStatus:
    """The ``ExecStatus`` of an exit message (the agent's and the server's have the same form)."""
    sig = body.get("signal")
    message = None
    if body.get("timed_out"):
        message = "timed out"
    elif body.get("oom_killed"):
        message = str(body.get("error_message") or oom_message(memory_mib))
    elif sig:
        message = f"killed by signal {sig} ({_signame(int(sig))})"
    return ExecStatus(
        exit_code=int(body["exit_code"]),
        signal=sig,
        timed_out=bool(body.get("timed_out")),
        error_message=message,
        duration_ms=body.get("duration_ms"),
        oom_killed=bool(body.get("oom_killed")),
    )


async def wait_exit(channel: ExecChannel, memory_mib: int | None = None) -> ExecStatus:
    """The command's exit status; a lost box or connection is exit code -1 with the reason."""
    try:
        body = await channel.exit
    except BoxDiedError as e:
        return ExecStatus(exit_code=-1, error_message=str(e))
    return exit_status(body, memory_mib)


MAX_SIGNAL = 64
"""Highest signal number ``signal_main`` accepts (Linux's SIGRTMAX)."""


def check_signal(sig: object) -> int:
    """A signal number 1..64 (``ConfigError`` otherwise): checked before anything reaches a box."""
    if isinstance(sig, bool) or not isinstance(sig, int) or not 1 <= sig <= MAX_SIGNAL:
        raise ConfigError(f"signal must be a number 1-{MAX_SIGNAL}, not {sig!r}")
    return sig


def _signame(sig: int) -> str:
    try:
        return _signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


class ImagesBackend(abc.ABC):
    """``runtime.images``: the image store of where the boxes live."""

    @abc.abstractmethod
    async def pull(self, reference: str, progress: Callable[[PullProgress], None] | None = None) -> ImageInfo: ...

    @abc.abstractmethod
    async def list(self) -> builtins.list[ImageInfo]: ...

    @abc.abstractmethod
    async def get(self, reference: str) -> ImageInfo | None:
        """The stored image ``reference`` names, or None (never pulls)."""

    @abc.abstractmethod
    async def config(self, reference: str) -> ImageConfig:
        """The image's config (entrypoint, cmd, env, ...); pulls the image when missing."""

    @abc.abstractmethod
    async def remove(self, reference: str, force: bool = False) -> None: ...

    @abc.abstractmethod
    async def load(self, path: str | Path) -> builtins.list[ImageInfo]: ...

    @abc.abstractmethod
    async def gc(self) -> int:
        """Delete what no image and no box uses; returns what was freed."""


class Backend(abc.ABC):
    """Where boxes live. Box ids or names are accepted wherever ``id_or_name`` is; other methods
    take the id a ``BoxInfo`` reported."""

    @property
    @abc.abstractmethod
    def images(self) -> ImagesBackend: ...

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """True once ``shutdown`` ran (every call then raises ``StoppedError``)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """A short ``key=value`` description for ``repr``."""

    # --- boxes ----------------------------------------------------------------------------
    @abc.abstractmethod
    async def create(self, options: BoxOptions, name: str | None) -> BoxInfo: ...

    @abc.abstractmethod
    async def get(self, id_or_name: str) -> BoxInfo | None: ...

    @abc.abstractmethod
    def info(self, box_id: str) -> BoxInfo:
        """Current information, synchronously (``Box.info()`` is not a coroutine)."""

    @abc.abstractmethod
    async def list(self, state: str | None = None) -> builtins.list[BoxInfo]: ...

    @abc.abstractmethod
    async def remove(self, id_or_name: str, force: bool = False) -> None: ...

    @abc.abstractmethod
    async def start(self, box_id: str, detach: bool | None = None) -> BoxInfo:
        """Start the box (a no-op when running); ``detach`` changes whether it outlives its owner."""

    @abc.abstractmethod
    async def stop(self, box_id: str, timeout: float | None = None) -> None: ...

    async def pause(self, box_id: str, to_disk: bool = False) -> BoxInfo:
        """Freeze every process of a running box, memory kept (``to_disk``: memory saved in the
        box's dir, its host processes ended)."""
        raise UnsupportedOptionError("pause", f"{type(self).__name__} cannot pause boxes")

    async def resume(self, box_id: str, detach: bool | None = None) -> BoxInfo:
        """Continue a paused box where it was (``detach``: for a box paused to disk, whether it
        outlives the process that resumes it)."""
        raise UnsupportedOptionError("resume", f"{type(self).__name__} cannot pause boxes")

    async def signal_main(self, box_id: str, signal: int) -> None:
        """``signal`` (1..64) to the running box's main process only (``boxlite kill -s USR1``); the
        box goes on unless that process ends of it. ``InvalidStateError`` when none runs."""
        raise UnsupportedOptionError("signal_main", f"{type(self).__name__} cannot signal main processes")

    async def exec_detached(self, box_id: str, request: ExecRequest) -> int:
        """Start ``request`` in the running box and leave it running (``boxlite exec -d``): its
        output goes to the box's capped ``exec.log``, not to the caller; returns its pid."""
        raise UnsupportedOptionError("detach", f"{type(self).__name__} cannot run detached executions")

    async def fork(self, box_id: str, n: int = 1) -> builtins.list[BoxInfo]:
        """``n`` new running boxes with the running box's memory and disk as they are now."""
        raise UnsupportedOptionError("fork", f"{type(self).__name__} cannot fork boxes")

    # --- disk state: snapshots, clones, archives ------------------------------------------
    async def snapshot_create(self, box_id: str, name: str) -> SnapshotInfo:
        """A named copy-on-write snapshot of the box's disk."""
        raise UnsupportedOptionError("snapshots", f"{type(self).__name__} has no snapshots")

    async def snapshot_list(self, box_id: str) -> builtins.list[SnapshotInfo]:
        raise UnsupportedOptionError("snapshots", f"{type(self).__name__} has no snapshots")

    async def snapshot_get(self, box_id: str, name: str) -> SnapshotInfo | None:
        return next((s for s in await self.snapshot_list(box_id) if s.name == name), None)

    async def snapshot_restore(self, box_id: str, name: str) -> None:
        """The stopped box's disk becomes the snapshot's (``InvalidStateError`` if running)."""
        raise UnsupportedOptionError("snapshots", f"{type(self).__name__} has no snapshots")

    async def snapshot_remove(self, box_id: str, name: str) -> None:
        raise UnsupportedOptionError("snapshots", f"{type(self).__name__} has no snapshots")

    async def clone(self, box_id: str, name: str | None) -> BoxInfo:
        """A new stopped box with the box's disk as it is now."""
        raise UnsupportedOptionError("clone_box", f"{type(self).__name__} cannot clone boxes")

    async def export(self, box_id: str, dest: str, options: ExportOptions) -> str:
        """Write the box to a ``.boxlite`` archive at ``dest`` (a file, or a directory); its path."""
        raise UnsupportedOptionError("export", f"{type(self).__name__} cannot export boxes")

    async def import_box(
        self, archive: str, name: str | None, untrusted: bool = False, engine: str | None = None
    ) -> BoxInfo:
        """A new stopped box from an archive ``export`` wrote (checked before anything is kept)."""
        raise UnsupportedOptionError("import_box", f"{type(self).__name__} cannot import boxes")

    # --- work -----------------------------------------------------------------------------
    @abc.abstractmethod
    async def ready(self, box_id: str) -> None:
        """Make the box able to run a command now (start it if needed; refuse a box whose main
        process ended). Backends that do this as part of ``exec`` may do nothing here."""

    @abc.abstractmethod
    async def exec(self, box_id: str, request: ExecRequest) -> StartedExec: ...

    @abc.abstractmethod
    async def copy_in(
        self, box_id: str, chunks: AsyncIterable[bytes], dest: str, name: str, include_parent: bool,
        overwrite: bool = True,
    ) -> None:  # fmt: skip
        """Extract a tar stream (top-level member ``name``) at ``dest`` in the box; without
        ``overwrite`` files that exist in the box are left as they are."""

    @abc.abstractmethod
    def copy_out(self, box_id: str, src: str, name: str, follow_symlinks: bool) -> AsyncGenerator[bytes, None]:
        """A tar stream of ``src`` (top-level member ``name``); raises before the first chunk
        when ``src`` does not exist. Closing the iterator early stops the box's side."""

    async def tunnel(self, box_id: str, port: int, window: int) -> TunnelStream:
        """One TCP connection to ``port`` on the box's loopback, connected (api/network.py);
        ``window``: bytes the box may send ahead of the caller's reading."""
        raise UnsupportedOptionError("box.network.tunnel", f"{type(self).__name__} has no tunnels")

    # --- metrics and shutdown -------------------------------------------------------------
    def count(self, box_id: str, commands: int = 0, errors: int = 0, sent: int = 0, received: int = 0) -> None:
        """What a ``Box`` handle just counted (executions, failed ones, bytes in/out): a backend
        that keeps box totals beyond one process adds them (the local home does)."""
        return None

    @abc.abstractmethod
    async def box_metrics(self, box_id: str, counted: ExecCounters) -> BoxMetrics:
        """The box's metrics; ``counted`` is what the calling handle counted (a backend that
        keeps its own counters, like a server, reports those instead)."""

    @abc.abstractmethod
    async def metrics(self, counted: ExecCounters) -> RuntimeMetrics: ...

    # --- named volumes (runtime/volumes.py): a backend without them says so -------------------
    async def volume_create(self) -> VolumeInfo:
        raise UnsupportedOptionError("named volumes", f"{type(self).__name__} has none")

    async def volume_list(self) -> builtins.list[VolumeInfo]:
        raise UnsupportedOptionError("named volumes", f"{type(self).__name__} has none")

    async def volume_get(self, volume_id: str) -> VolumeInfo:
        raise UnsupportedOptionError("named volumes", f"{type(self).__name__} has none")

    async def volume_remove(self, volume_id: str, force: bool = False) -> None:
        raise UnsupportedOptionError("named volumes", f"{type(self).__name__} has none")

    @abc.abstractmethod
    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop the (non-detached) boxes this backend started, then refuse new work."""
