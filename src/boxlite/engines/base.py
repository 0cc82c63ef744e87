"""The engine interface: how a box's isolation boundary is started, killed and measured."""

from __future__ import annotations

import asyncio
import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..aio import within
from ..errors import UnsupportedOptionError
from ..layout import BoxLayout
from ..procfs import process_start_time, started_at

__all__ = ["BoxSpec", "Engine", "RootLayers", "RunningBox", "process_start_time"]


@dataclass(frozen=True)
class RootLayers:
    """Read-only root filesystem of a box: unpacked layer dirs, bottom first.

    Ownership inside the layer dirs is the image's; the box's own files are owned by ids shifted
    by ``uid_base`` (box uid 0 = host ``uid_base``), so the namespace engine maps the layers
    with id-mapped mounts. ``shifted``: layers of an older store whose ownership is already
    shifted (boxes created before). ``image_id`` identifies the stack for caches (e.g. the VM
    engine's root disk image).
    """

    layers: tuple[Path, ...]
    image_id: str
    uid_base: int
    shifted: bool = False


@dataclass
class BoxSpec:
    """Everything an engine needs to start one box."""

    box_id: str
    box_dir: Path
    root: RootLayers
    hostname: str
    cache_dir: Path
    """Caches shared by the boxes of one home (``<home>/cache``), e.g. the VM engine's disk images."""
    cpus: float | None = None
    memory_mib: int | None = None
    pids_limit: int | None = None
    disk_size_gb: float | None = None
    detach: bool = False
    lifeline_fd: int | None = None
    volumes: list[tuple[str, str, bool]] = field(default_factory=list)
    """(host path, path in the box, read-only) bind mounts."""
    network: bool = False
    """Outbound network (else loopback only)."""
    allow_net: tuple[str, ...] = ()
    """Egress allow-list (``..net.allowlist`` entries); empty: any destination but the host."""
    public_only: bool = False
    """Outbound flows to public addresses only (``..net.hostguard.PRIVATE4``/``PRIVATE6`` refused)."""
    secrets: list[dict[str, Any]] = field(default_factory=list)
    """Secret placeholders (name, value, hosts, placeholder) for the box's secret proxy (..net.secretproxy)."""
    ports: list[tuple[str, int, int, str]] = field(default_factory=list)
    """Published ports: (host ip, host port, box port, "tcp"|"udp"); implies ``network``."""
    ready_timeout: float = 60.0
    vm_snapshot: bool = True
    """VM engine: start from a snapshot template when possible (else boot cold)."""
    vm_tb_size_mib: int | None = None
    """VM engine under TCG: translation-block cache size (None: ``$BOXLITE_VM_TB_SIZE_MIB`` or the default)."""
    cap_mask: int | None = None
    """Box root's capabilities (bit N = capability N; runtime/capabilities.py resolves them);
    None: the agent's default, Docker's 14."""
    volatile_upper: bool = False
    """The writable layer is discarded when the box stops (``auto_remove``): the namespace
    engine mounts it ``volatile``, so that its teardown does not flush the host file system."""

    @property
    def layout(self) -> BoxLayout:
        """Every path inside the box's directory."""
        return BoxLayout(self.box_dir)

    @property
    def run_dir(self) -> Path:
        """Host directory holding the agent socket and other runtime files."""
        return self.layout.run_dir

    @property
    def agent_socket(self) -> Path:
        return self.layout.agent_socket


@dataclass
class RunningBox:
    """A started box: its supervisor's host pid (+ start time against pid reuse)."""

    pid: int
    pid_start: int
    agent_socket: Path

    def is_alive(self) -> bool:
        return process_start_time(self.pid) == self.pid_start

    async def wait_gone(self, timeout: float) -> bool:
        """Wait until the process is gone (True) or ``timeout`` seconds passed (False): woken by
        a pidfd when it exits (a 5 ms poll alone made every removal ~2.5 ms slower on average),
        then polled until it is reaped too."""
        started = time.monotonic()
        await self._exited(timeout)
        while self.is_alive():
            waited = time.monotonic() - started
            if waited >= timeout:
                return False
            await asyncio.sleep(0.001 if waited < 0.05 else 0.005)
        return True

    async def _exited(self, timeout: float) -> None:
        """Return when the process has exited (or may have: any doubt returns at once)."""
        try:
            fd = os.pidfd_open(self.pid)
        except OSError:  # gone already, or no pidfds: the caller polls
            return
        try:
            # Gone, or the pid was reused, before the pidfd was opened. A zombie is waited for: its
            # pidfd turns readable once all its threads ended (QEMU's hold its sockets until then).
            if started_at(self.pid) != self.pid_start:
                return
            loop = asyncio.get_running_loop()
            exited: asyncio.Future[None] = loop.create_future()

            def readable() -> None:
                if not exited.done():
                    exited.set_result(None)

            loop.add_reader(fd, readable)
            try:
                await within(exited, timeout)
            except asyncio.TimeoutError:
                pass
            finally:
                loop.remove_reader(fd)
        finally:
            os.close(fd)


class Engine(ABC):
    """One isolation technology. Engines are stateless; state lives in the box dir."""

    name: ClassVar[str]
    live_rootfs: ClassVar[bool] = False
    """Can a rootfs directory be the box's lower layer in place (no copy, no fingerprint walk)?"""
    kill_loses_nothing: ClassVar[bool] = False
    """Is :meth:`kill` without grace as good as the agent's own shutdown with none (which a VM
    box's agent ends by flushing the guest's disk)? Then a stop with no grace skips asking it."""

    @abstractmethod
    async def start(self, spec: BoxSpec) -> RunningBox:
        """Start the box and return once its agent accepts connections on the socket."""

    @abstractmethod
    async def kill(self, spec: BoxSpec, running: RunningBox) -> None:
        """Force the box down (after a graceful agent shutdown failed or was skipped)."""

    @abstractmethod
    def cleanup(self, spec: BoxSpec) -> None:
        """Release host resources of a box that is no longer running (idempotent)."""

    def metrics(self, spec: BoxSpec, running: RunningBox | None) -> dict[str, float]:
        """Host-side resource numbers for the box (memory, cpu time...)."""
        return {}

    # --- pause / resume (memory kept) -------------------------------------------------------
    async def freeze(self, spec: BoxSpec, running: RunningBox) -> None:
        """Stop every process of the box where it is, memory kept (cgroup freezer; QEMU ``stop``).
        Idempotent; returns once nothing of the box runs any more, so its disk and memory can be
        copied consistently (snapshots, clones). Raises ``UnsupportedOptionError`` if the engine
        cannot."""
        raise UnsupportedOptionError("pause", f"the {self.name} engine cannot freeze a box")

    async def thaw(self, spec: BoxSpec, running: RunningBox) -> None:
        """Undo :meth:`freeze` (idempotent): the box's processes continue where they were."""
        raise UnsupportedOptionError("resume", f"the {self.name} engine cannot freeze a box")

    def is_frozen(self, spec: BoxSpec) -> bool:
        """Whether the box is frozen now (read from the host, any process may ask)."""
        return False

    # --- pause to disk (memory saved to the box dir, host processes ended) ------------------
    async def save(self, spec: BoxSpec, running: RunningBox) -> None:
        """Save the running box's memory and device state into its dir and end its host
        processes; :meth:`restore` continues it later (also from another host process)."""
        raise UnsupportedOptionError("to_disk", f"the {self.name} engine cannot save a box's memory to disk")

    async def restore(self, spec: BoxSpec) -> RunningBox:
        """Start the box from what :meth:`save` wrote (and delete that)."""
        raise UnsupportedOptionError("to_disk", f"the {self.name} engine cannot save a box's memory to disk")

    def has_saved_state(self, spec: BoxSpec) -> bool:
        """Whether :meth:`save` left a state to :meth:`restore` in the box's dir."""
        return False

    def forget_saved_state(self, spec: BoxSpec) -> None:
        """Delete a saved state (the box is stopped or removed instead of resumed)."""
        return None  # engines without a saved state have nothing to delete

    # --- fork of a running box (its memory, for copies of its disk) -------------------------
    def check_forkable(self, spec: BoxSpec) -> None:
        """Raise UnsupportedOptionError if box ``spec`` cannot be forked: called before the box is
        paused or its disk copied, so a refusal costs nothing."""
        raise UnsupportedOptionError("fork", f"the {self.name} engine cannot fork a running box")

    async def fork_state(self, spec: BoxSpec, running: RunningBox) -> None:
        """Save the memory of a frozen box for forks, the box staying as it is (frozen)."""
        raise UnsupportedOptionError("fork", f"the {self.name} engine cannot fork a running box")

    def adopt_fork_state(self, spec: BoxSpec, source: BoxSpec) -> None:
        """Give box ``spec`` (a copy of ``source``'s disk) ``source``'s fork state as its saved
        state: :meth:`restore` then starts it where ``source`` was."""
        raise UnsupportedOptionError("fork", f"the {self.name} engine cannot fork a running box")

    def forget_fork_state(self, spec: BoxSpec) -> None:
        """Delete what :meth:`fork_state` wrote."""
        return None

    streams_forks = False
    """Whether a fork's one copy can load the source's memory as it is written
    (:meth:`prepare_fork_stream`, :meth:`send_fork_stream`) instead of from a saved file."""

    async def prepare_fork_stream(self, spec: BoxSpec, source: BoxSpec) -> int:
        """Make box ``spec`` restorable from a pipe; returns the pipe's write end."""
        raise UnsupportedOptionError("fork", f"the {self.name} engine cannot stream a fork")

    async def send_fork_stream(self, source: BoxSpec, write_end: int, timeout: float) -> None:
        """Write the frozen ``source``'s memory into ``write_end`` (taken and closed)."""
        raise UnsupportedOptionError("fork", f"the {self.name} engine cannot stream a fork")
