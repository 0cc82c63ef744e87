"""``VmEngine``: each box is a QEMU micro-VM supervised by a per-box shim process."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

from ... import procfs, runtime_artifact
from ...agent.protocol import STATUS_ERROR, STATUS_READY, STATUS_TEMPLATE, StatusLine
from ...aio import within
from ...client.agent_client import AgentClient
from ...errors import BoxliteError, EngineError, UnsupportedOptionError
from ...layout import QEMU_PID_NAME, SHIM_PID_NAME, VM_CONF_NAME
from .. import diskchain
from ..base import BoxSpec, Engine, RunningBox, process_start_time
from ..net import allowlist, hostguard, netcounters
from ..status import read_status
from . import accel as accel_mod
from . import templates, vmcontrol
from .disks import ensure_box_disk, ensure_empty_lower, ensure_layer_image
from .qemu import DEFAULT_MEMORY_MIB, DEFAULT_TB_SIZE_MIB, INCOMING_STREAM, VmConfig, console_tail, vcpus
from .templates import template_dir

__all__ = ["VmEngine", "cache_dir", "disk_path", "guest_memory_mib", "template_dir"]

log = logging.getLogger("boxlite.vm")
DEFAULT_DISK_GB = 2.0
KILL_TIMEOUT = 10.0  # seconds for the shim and QEMU to be gone after SIGKILL
_SRC_DIR = str(Path(__file__).resolve().parents[3])  # the directory holding the boxlite package
# The shim imports only what it uses (boxlite/__init__.py exports lazily): ~15 MiB PSS.
_SHIM_BOOTSTRAP = (
    "import sys; sys.path.insert(0, sys.argv[1]); from boxlite.engines.vm.shim import main; "
    "sys.exit(main(sys.argv[2:]))"
)


def cache_dir(spec: BoxSpec) -> Path:
    """The VM engine's caches of the box's home (layer disks, KVM probe)."""
    return spec.cache_dir / "vm"


GUEST_OVERHEAD_MIB = 128  # kernel, initramfs, agent: guest RAM beyond the box's memory limit


def guest_memory_mib(limit_mib: int | None) -> int:
    """Guest RAM for a box whose processes may use ``limit_mib`` (enforced by a guest cgroup)."""
    return DEFAULT_MEMORY_MIB if not limit_mib else limit_mib + GUEST_OVERHEAD_MIB


def disk_path(spec: BoxSpec) -> Path:
    return spec.layout.vm_disk


class VmEngine(Engine):
    """Boxes as micro-VMs: own kernel, virtio-serial agent channel, ext4 root disks.

    Unless disabled (``BOXLITE_VM_SNAPSHOT=0`` or ``spec.vm_snapshot = False``), a box
    starts by restoring a memory snapshot of a *template* VM that booted and loaded the agent
    but has not seen any box yet (one per artifact, accelerator, vCPUs, memory and disk size,
    saved in ``<home>/cache/vm/templates/``); if that fails it boots cold.
    """

    name = "vm"

    def __init__(self) -> None:
        self._fork_streams: dict[str, int] = {}  # box id -> read end of the pipe its restore loads

    async def start(self, spec: BoxSpec) -> RunningBox:
        t0 = time.monotonic()
        artifact = await asyncio.to_thread(runtime_artifact.locate)
        _warn_if_stale(artifact)
        accel = await asyncio.to_thread(accel_mod.choose, artifact, cache_dir(spec))
        if spec.root.layers:
            lower = await asyncio.to_thread(ensure_layer_image, cache_dir(spec), spec.root)
        else:
            lower = await asyncio.to_thread(ensure_empty_lower, cache_dir(spec))
        layers = diskchain.chain(spec.box_dir, self.name)  # snapshots: a qcow2 top on frozen layers
        disk = layers.top
        disk.parent.mkdir(parents=True, exist_ok=True)
        if layers.top_format == "raw":  # frozen layers are shared (clones): never grown
            await asyncio.to_thread(ensure_box_disk, disk, spec.disk_size_gb or DEFAULT_DISK_GB)
        run = spec.run_dir
        run.mkdir(parents=True, exist_ok=True)
        console = spec.layout.console_log
        if console.exists():
            console.replace(spec.layout.console_log_prev)
        self.forget_saved_state(spec)  # a fresh start: a saved memory (e.g. of a killed save) is obsolete
        self.forget_fork_state(spec)
        for stale in (spec.layout.boot_json, spec.layout.qemu_pid):
            stale.unlink(missing_ok=True)
        spec.agent_socket.unlink(missing_ok=True)
        vm = VmConfig(
            kernel=str(artifact.kernel),
            initramfs=str(artifact.initramfs),
            console=str(console),
            upper_disk=str(disk),
            upper_format=layers.top_format,
            upper_backing=[str(p) for p in layers.lowers],
            upper_volatile=spec.volatile_upper,
            lower_disk=str(lower),
            layers=len(spec.root.layers),
            hostname=spec.hostname,
            cpus=vcpus(spec.cpus),
            memory_mib=guest_memory_mib(spec.memory_mib),
            accel=accel.name,
            tb_size_mib=int(
                str(spec.vm_tb_size_mib or os.environ.get("BOXLITE_VM_TB_SIZE_MIB") or DEFAULT_TB_SIZE_MIB)
            ),
            debug=artifact.debug,
            network=spec.network or bool(spec.ports),
            ports=[list(p) for p in spec.ports],
            volumes=[_shared_dir(host, guest, ro) for host, guest, ro in spec.volumes],
        )
        vm, bundle = await _net_policy(spec, vm)
        timings = {"prepare_s": round(time.monotonic() - t0, 4)}
        deadline = t0 + spec.ready_timeout  # the whole start, template creation included
        if templates.snapshots_enabled(spec) and not vm.volumes:  # volumes need shared guest RAM: cold boot
            bare = replace(vm, dnsproxy=None, secretproxy=None)  # the template has no network: no proxies
            template = await templates.ensure(spec, artifact, bare, deadline, self._run_shim)
            if template is not None:
                timings["template_ready_s"] = round(time.monotonic() - t0, 4)
                try:
                    restore = replace(vm, incoming=str(template), ram_file=str(template.with_suffix(".ram")))
                    return await _with_bundle(
                        spec, bundle, self._spawn_shim(spec, restore, timings, "restore", deadline)
                    )
                except _NotReady:
                    raise
                except EngineError as e:
                    log.warning("VM box %s: restoring the snapshot failed, booting cold: %s", spec.box_id, e)
                    templates.forget(template)
                    if console.exists():
                        console.replace(spec.layout.console_restore_failed)
        return await _with_bundle(spec, bundle, self._spawn_shim(spec, vm, timings, "boot", deadline))

    async def _run_shim(
        self,
        vm: VmConfig,
        run: Path,
        agent_socket: Path,
        lifeline_fd: int | None,
        timeout: float,
        extra: dict[str, object],
        fds: tuple[int, ...] = (),
    ) -> tuple[int | None, StatusLine | None]:
        """Spawn a shim and wait for its final status line: (shim pid, status; None if ``timeout``
        passed, then the shim is killed)."""
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        conf = {
            "vm": vm.to_json(),
            "run_dir": str(run),
            "console": vm.console,
            "agent_socket": str(agent_socket),
            "status_fd": status_w,
            "lifeline_fd": lifeline_fd,
            **extra,
        }
        conf_path = run / VM_CONF_NAME
        conf_path.write_text(json.dumps(conf, indent=1))
        pass_fds = [status_w, *fds] if lifeline_fd is None else [status_w, lifeline_fd, *fds]
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _SHIM_BOOTSTRAP, _SRC_DIR, str(conf_path)],
                pass_fds=pass_fds,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            os.close(status_w)
        await asyncio.to_thread(proc.wait)  # the intermediate process exits after forking
        state: dict[str, int] = {}
        try:
            status: StatusLine | None = await within(read_status(status_r, state), timeout)
        except asyncio.TimeoutError:
            status = None
        finally:
            os.close(status_r)
        if status is None or status.word not in (STATUS_READY, STATUS_TEMPLATE):
            self._force_kill(state.get("pid"), run)
        return state.get("pid"), status

    async def _spawn_shim(
        self,
        spec: BoxSpec,
        vm: VmConfig,
        timings: dict[str, float],
        mode: str,
        deadline: float,
        more: dict[str, object] | None = None,
        fds: tuple[int, ...] = (),
    ) -> RunningBox:
        run = spec.run_dir
        t_spawn = time.monotonic()
        lifeline = None if spec.detach else spec.lifeline_fd
        extra: dict[str, object] = {"mode": mode, "pids_limit": spec.pids_limit, "memory_limit_mib": spec.memory_mib}
        extra.update(more or {})
        extra["cap_mask"] = spec.cap_mask
        extra["volatile"] = spec.volatile_upper
        left = templates.remaining(deadline)
        pid, status = await self._run_shim(vm, run, spec.agent_socket, lifeline, left, extra, fds)
        if status is None:
            why = f"the agent was not ready within {spec.ready_timeout:g}s"
            raise _NotReady(self._boot_failure(spec, why))
        if pid is None or status.word != STATUS_READY:
            raise EngineError(self._boot_failure(spec, status.arg if status.word == STATUS_ERROR else "the shim died"))
        boot = json.loads(status.arg or "{}")
        boot.update(timings, start_to_ready_s=round(time.monotonic() - t_spawn, 4), restored=mode == "restore")
        spec.layout.boot_json.write_text(json.dumps(boot))
        start = process_start_time(pid)
        if start is None:
            raise EngineError(self._boot_failure(spec, "the shim exited right after the agent became ready"))
        return RunningBox(pid=pid, pid_start=start, agent_socket=spec.agent_socket)

    def _boot_failure(self, spec: BoxSpec, why: str) -> str:
        msg = f"VM box {spec.box_id} failed to start: {why}"
        shim_log = console_tail(spec.layout.shim_log, 5)
        if shim_log:
            msg += f"\n--- shim/QEMU log (last lines) ---\n{shim_log}"
        tail = console_tail(spec.layout.console_log)
        msg += f"\n--- console ({spec.layout.console_log}, last lines) ---\n{tail or '(empty)'}"
        return msg

    def _force_kill(self, pid: int | None, run: Path) -> None:
        for target in (pid, _qemu_pid(run)):
            if target:
                try:
                    os.kill(target, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    async def kill(self, spec: BoxSpec, running: RunningBox) -> None:
        qemu = _qemu_pid(spec.run_dir)
        qemu_start = process_start_time(qemu) if qemu else None
        if qemu_start is None:
            qemu = None  # already gone
        if running.is_alive():
            os.kill(running.pid, signal.SIGKILL)  # QEMU follows (PR_SET_PDEATHSIG)
        if qemu and qemu_start is not None and _is_qemu(qemu):
            try:
                os.kill(qemu, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + KILL_TIMEOUT
        gone = await running.wait_gone(KILL_TIMEOUT)  # woken by pidfds, not a 20 ms poll
        if gone and qemu is not None and qemu_start is not None:
            gone = await RunningBox(qemu, qemu_start, running.agent_socket).wait_gone(templates.remaining(deadline))
        if not gone:
            raise EngineError(f"VM box {spec.box_id}: processes survived SIGKILL")

    def cleanup(self, spec: BoxSpec) -> None:
        for path in (spec.layout.vm_conf, spec.layout.qemu_pid, spec.layout.shim_pid, _paused_marker(spec)):
            path.unlink(missing_ok=True)
        allowlist.release(spec.box_dir)
        spec.agent_socket.unlink(missing_ok=True)

    # --- pause / resume (vmcontrol: the relay sends QMP stop/cont) -------------------------
    async def freeze(self, spec: BoxSpec, running: RunningBox) -> None:
        """QMP ``stop``: the vCPUs stop (guest memory and clock kept, no guest code runs); the
        relay keeps serving the agent socket, whose requests wait until :meth:`thaw`."""
        await self._control(spec, "stop", "paused")
        _paused_marker(spec).touch()

    async def thaw(self, spec: BoxSpec, running: RunningBox) -> None:
        await self._control(spec, "cont", "running")
        _paused_marker(spec).unlink(missing_ok=True)

    def is_frozen(self, spec: BoxSpec) -> bool:
        try:
            return vmcontrol.request(str(spec.run_dir), "status", timeout=2.0).get("status") == "paused"
        except OSError:
            return False

    # --- pause to disk (vmcontrol save; restore = a start that loads the saved state) -------
    async def save(self, spec: BoxSpec, running: RunningBox) -> None:
        """The relay stops the guest and writes its RAM and devices to ``run/vm-saved.state``
        (fsynced, then renamed into place), then QEMU and the relay exit. The shim config is
        kept beside it: the restore needs the same machine shape."""
        if spec.volumes:
            raise UnsupportedOptionError("to_disk", "a VM box with volumes cannot be saved (virtiofs cannot migrate)")
        run = spec.run_dir
        conf = run / VM_CONF_NAME
        try:
            shape = json.loads(conf.read_text())["vm"]
        except (OSError, ValueError, KeyError):
            raise EngineError(f"VM box {spec.box_id}: no shim config to save it with") from None
        try:
            reply = await asyncio.to_thread(vmcontrol.request, str(run), "save", vmcontrol.SAVE_TIMEOUT + 10)
        except OSError as e:
            raise EngineError(f"VM box {spec.box_id}: its relay does not answer ({e}); restart the box") from None
        if not reply.get("ok"):
            (run / vmcontrol.SAVED_STATE_NAME).unlink(missing_ok=True)
            with contextlib.suppress(EngineError):  # the guest was stopped for the save: let it run again
                await self._control(spec, "cont", "running")
            raise EngineError(f"VM box {spec.box_id}: saving its memory failed: {reply.get('error')}")
        _saved_shape(spec).write_text(json.dumps(shape))
        if not await running.wait_gone(10):
            await self.kill(spec, running)
        _paused_marker(spec).unlink(missing_ok=True)
        self.cleanup(spec)

    def has_saved_state(self, spec: BoxSpec) -> bool:
        return (spec.run_dir / vmcontrol.SAVED_STATE_NAME).exists() and _saved_shape(spec).exists()

    def forget_saved_state(self, spec: BoxSpec) -> None:
        stream = self._fork_streams.pop(spec.box_id, None)
        if stream is not None:
            os.close(stream)
        names = (vmcontrol.SAVED_STATE_NAME, vmcontrol.RELAY_STATE_NAME, SAVED_SHAPE_NAME, SAVED_RAM_NAME)
        for name in (*names, f"{vmcontrol.SAVED_STATE_NAME}.tmp"):
            (spec.run_dir / name).unlink(missing_ok=True)

    async def restore(self, spec: BoxSpec) -> RunningBox:
        """A new QEMU of the saved shape loads the saved state (``-incoming``), the shim runs
        the guest on (mode ``resume``: no settings, only a ``hello``) and a new relay takes
        over the detached executions' logs. The saved files are deleted once the box runs."""
        stream = self._fork_streams.pop(spec.box_id, None)  # a fork's one copy: its memory comes through a pipe
        try:
            return await self._restore(spec, stream)
        finally:
            if stream is not None:
                os.close(stream)  # the shim has its own copy (or failed): the sender sees who reads

    async def _restore(self, spec: BoxSpec, stream: int | None) -> RunningBox:
        t0 = time.monotonic()
        run = spec.run_dir
        state = run / vmcontrol.SAVED_STATE_NAME
        try:
            vm = VmConfig(**json.loads(_saved_shape(spec).read_text()))
        except (OSError, ValueError, TypeError):
            raise EngineError(f"VM box {spec.box_id}: no saved state to resume from") from None
        if stream is None and not state.exists():
            raise EngineError(f"VM box {spec.box_id}: its saved memory ({state}) is missing")
        relay_state: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            relay_state = json.loads((run / vmcontrol.RELAY_STATE_NAME).read_text())
        disks = diskchain.chain(spec.box_dir, self.name)  # this box's own (a fork's are a copy)
        vm = replace(
            vm,
            console=str(spec.layout.console_log),
            upper_disk=str(disks.top),
            upper_format=disks.top_format,
            upper_backing=[str(p) for p in disks.lowers],
        )
        if vm.ram_file:  # it ran from a template's RAM (private mapping): all of it is in the state,
            vm = replace(vm, ram_file=None, ram_anonymous=True)  # loaded into anonymous memory
        incoming = INCOMING_STREAM if stream is not None else str(state)
        vm = replace(vm, incoming=incoming, net_gid=None, dnsproxy=None, secretproxy=None)
        vm, bundle = await _net_policy(spec, vm)  # as start() does (a fresh CA: the bundle is installed again)
        console = spec.layout.console_log
        if console.exists():
            console.replace(spec.layout.console_log_prev)
        spec.agent_socket.unlink(missing_ok=True)
        timings = {"prepare_s": round(time.monotonic() - t0, 4)}
        more: dict[str, object] = {"relay_state": relay_state}  # the relay's first hello takes its next channel
        if stream is not None:
            more["incoming_fd"] = stream
        fds = (stream,) if stream is not None else ()
        deadline = t0 + spec.ready_timeout
        running = await _with_bundle(spec, bundle, self._spawn_shim(spec, vm, timings, "resume", deadline, more, fds))
        self.forget_saved_state(spec)
        return running

    # --- fork: the frozen guest's memory, restored in copies of its disk ---------------------
    def check_forkable(self, spec: BoxSpec) -> None:
        if spec.volumes or spec.ports:
            why = "volumes (virtiofs cannot migrate)" if spec.volumes else "published ports (the copies would clash)"
            raise UnsupportedOptionError("fork", f"a VM box with {why} cannot be forked")

    async def fork_state(self, spec: BoxSpec, running: RunningBox) -> None:
        try:
            reply = await asyncio.to_thread(vmcontrol.request, str(spec.run_dir), "snapshot", vmcontrol.SAVE_TIMEOUT)
        except OSError as e:
            raise EngineError(f"VM box {spec.box_id}: its relay does not answer ({e}); restart the box") from None
        if not reply.get("ok"):
            self.forget_fork_state(spec)
            raise EngineError(f"VM box {spec.box_id}: saving its memory for a fork failed: {reply.get('error')}")

    def adopt_fork_state(self, spec: BoxSpec, source: BoxSpec, linked: bool = True) -> None:
        try:
            shape = json.loads((source.run_dir / VM_CONF_NAME).read_text())["vm"]
        except (OSError, ValueError, KeyError):
            raise EngineError(f"VM box {source.box_id}: no shim config to fork it with") from None
        run = spec.run_dir
        run.mkdir(parents=True, exist_ok=True)
        if linked:
            os.link(source.run_dir / vmcontrol.FORK_STATE_NAME, run / vmcontrol.SAVED_STATE_NAME)  # read only
        with contextlib.suppress(OSError):
            relay = (source.run_dir / vmcontrol.FORK_RELAY_NAME).read_text()
            (run / vmcontrol.RELAY_STATE_NAME).write_text(relay)
        _saved_shape(spec).write_text(json.dumps(shape))

    def forget_fork_state(self, spec: BoxSpec) -> None:
        for name in (vmcontrol.FORK_STATE_NAME, vmcontrol.FORK_RELAY_NAME, f"{vmcontrol.FORK_STATE_NAME}.tmp"):
            (spec.run_dir / name).unlink(missing_ok=True)

    # --- fork of one copy: the source's memory streamed into the copy's QEMU, no file between ----
    streams_forks = True

    async def prepare_fork_stream(self, spec: BoxSpec, source: BoxSpec) -> int:
        """Make box ``spec`` (a copy of ``source``'s disk) restorable from a pipe; returns the
        pipe's write end for :meth:`send_fork_stream`. :meth:`restore` of ``spec`` reads it:
        the copy's QEMU starts and loads while the source writes, instead of after."""
        await self._control(source, "relaystate", None)  # its detached executions, for the copy's relay
        self.adopt_fork_state(spec, source, linked=False)
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # fewer wake-ups per MiB for both QEMUs (1 MiB: root's default cap)
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 1 << 20)
        self._fork_streams[spec.box_id] = read_end  # (a new box: no earlier stream to replace)
        return write_end

    async def send_fork_stream(self, source: BoxSpec, write_end: int, timeout: float) -> None:
        """The source's relay writes its stopped guest into ``write_end`` (taken: closed once sent).
        Ends when the copy's QEMU has read it all, or fails at once if that QEMU is gone."""
        try:
            reply = await asyncio.to_thread(
                vmcontrol.request, str(source.run_dir), "send", timeout + 5, write_end, within_s=timeout
            )
        except OSError as e:
            raise EngineError(f"VM box {source.box_id}: its relay does not answer ({e}); restart the box") from None
        if not reply.get("ok"):
            raise EngineError(f"VM box {source.box_id}: sending its memory to the fork failed: {reply.get('error')}")

    async def _control(self, spec: BoxSpec, op: str, want: str | None) -> None:
        try:
            reply = await asyncio.to_thread(vmcontrol.request, str(spec.run_dir), op)
        except OSError as e:
            raise EngineError(f"VM box {spec.box_id}: its relay does not answer ({e}); restart the box") from None
        if not reply.get("ok") or (want is not None and reply.get("status") != want):
            raise EngineError(f"VM box {spec.box_id}: {op} failed: {reply.get('error') or reply.get('status')}")

    def metrics(self, spec: BoxSpec, running: RunningBox | None) -> dict[str, float]:
        """``memory_bytes`` (PSS of shim + QEMU), ``cpu_usage_ns``, ``pids`` (processes in the
        box, asked from the agent), boot timings (``boot_*_s``), ``qemu_pss_bytes``,
        ``disk_bytes`` (allocated size of the box disk)."""
        out: dict[str, float] = {}
        try:
            boot = json.loads(spec.layout.boot_json.read_text())
            out.update({f"boot_{k}": float(v) for k, v in boot.items() if k.endswith("_s")})
        except (OSError, ValueError):
            pass
        shim = running.pid if running is not None and running.is_alive() else _live_shim(spec.run_dir)
        if shim is None:
            return out
        qemu = _qemu_pid(spec.run_dir)
        qemu_pss = procfs.pss_bytes(qemu) if qemu else 0
        out["memory_bytes"] = float(procfs.pss_bytes(shim) + qemu_pss)
        out["qemu_pss_bytes"] = float(qemu_pss)
        out["cpu_usage_ns"] = sum(procfs.cpu_seconds(pid) for pid in (shim, qemu) if pid) * 1e9
        out["disk_bytes"] = float(_allocated(diskchain.chain(spec.box_dir, self.name).top))  # the writable layer
        paused = _paused_marker(spec).exists()  # a stopped guest cannot answer
        stats = {} if paused else _agent_stats(spec.agent_socket)
        processes = stats.get("processes")
        if isinstance(processes, (int, float)):
            out["pids"] = float(processes)
        net = stats.get("net")  # the guest kernel's count, as the guest reports it (docs/network.md)
        if isinstance(net, list) and len(net) == 4 and all(isinstance(v, int) and v >= 0 for v in net):
            keys = ("net_bytes_sent", "net_bytes_received", "net_packets_sent", "net_packets_received")
            out.update({k: float(v) for k, v in zip(keys, net, strict=True)})
        out.update(netcounters.read(spec.box_dir))  # the host's: refused flows and names
        return out


SAVED_SHAPE_NAME = "vm-saved.json"
"""In the run dir: the VmConfig a saved box ran with (its restore needs the same shape)."""
SAVED_RAM_NAME = "vm-saved.ram"
"""In the run dir: the (sparse, privately mapped) RAM file of a box restored from its saved state."""


async def _net_policy(spec: BoxSpec, vm: VmConfig) -> tuple[VmConfig, Path | None]:
    """The box's helper group, rules and proxies (docs/network.md) when it has an allow-list or
    secrets, else the host guard alone; and the CA bundle to install in the guest (secrets)."""
    if not vm.network:
        return vm, None
    if not (spec.allow_net or spec.secrets or spec.public_only):
        await asyncio.to_thread(hostguard.install)  # before QEMU's slirp opens a socket: no way to the host
        return vm, None
    accept_all = not (spec.allow_net or spec.secrets)  # public-only: the host guard decides
    gid = await asyncio.to_thread(allowlist.claim_gid, spec.box_dir, spec.public_only, accept_all)
    vm = replace(vm, net_gid=gid)
    if accept_all:
        return vm, None
    if spec.allow_net:
        vm = replace(vm, dnsproxy=allowlist.proxy_command(spec.box_dir, gid, allowlist.parse(list(spec.allow_net))))
    if not spec.secrets:
        return vm, None
    argv, bundle = await asyncio.to_thread(
        allowlist.secret_proxy_command, spec.box_dir, gid, spec.secrets, bool(spec.allow_net), spec.root.layers
    )
    return replace(vm, secretproxy=argv), bundle


async def _with_bundle(spec: BoxSpec, bundle: Path | None, started: Awaitable[RunningBox]) -> RunningBox:
    """Start the box, then (secrets) write its CA bundle over the guest's system bundle: the
    guest's disk is its own, so unlike the namespace engine's read-only bind the box may change
    it (that only stops its own TLS through the proxy). The box's processes start after this."""
    running = await started
    if bundle is not None:
        await install_bundle(spec.agent_socket, bundle.read_bytes())
    return running


async def install_bundle(agent_socket: Path, data: bytes) -> None:
    """``untar`` of one file at ``allowlist.SECRET_BUNDLE`` through the agent."""
    import io
    import tarfile

    name = PurePosixPath(allowlist.SECRET_BUNDLE).name
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    client = await AgentClient.connect(agent_socket)
    try:
        args = {"dest": allowlist.SECRET_BUNDLE, "name": name, "into": False, "overwrite": True}
        channel = await client.exec({"builtin": "untar", "builtin_args": args}, "install the secrets CA bundle")
        await channel.write_stdin(buf.getvalue())
        await channel.close_stdin()
        errors = await within(channel.stderr.read_all(), 30)
        status = await within(channel.exit, 30)
    finally:
        await client.close()
    if status.get("exit_code") != 0:
        raise EngineError(
            f"could not install the secrets CA bundle in the box: {errors[:300].decode(errors='replace')}"
        )


def _saved_shape(spec: BoxSpec) -> Path:
    return spec.run_dir / SAVED_SHAPE_NAME


def _paused_marker(spec: BoxSpec) -> Path:
    """Present while the guest is stopped by :meth:`VmEngine.freeze` (metrics then skip the agent)."""
    return spec.run_dir / "vm.paused"


def _live_shim(run: Path) -> int | None:
    """The shim pid from ``run/shim.pid`` ("pid start-time") if that process still runs."""
    try:
        pid, start = (int(x) for x in (run / SHIM_PID_NAME).read_text().split())
    except (OSError, ValueError):
        return None
    return pid if process_start_time(pid) == start else None


def _agent_stats(path: Path, timeout: float = 2.0) -> dict[str, Any]:
    """The agent's ``stats`` answer ({} on failure). ``Engine.metrics`` is synchronous and may be
    called on a running event loop, so the short connection runs on a loop of its own thread."""

    async def ask() -> dict[str, Any]:
        client = await AgentClient.connect(path, timeout=timeout)
        try:
            return await client.request("stats", timeout=timeout)
        finally:
            await client.close()

    with ThreadPoolExecutor(1, thread_name_prefix="boxlite-vm-stats") as pool:
        try:
            return pool.submit(asyncio.run, ask()).result()
        except (BoxliteError, OSError):
            return {}


_warned_stale: set[str] = set()


def _warn_if_stale(artifact: runtime_artifact.RuntimeArtifact) -> None:
    """Once per artifact: say so when the checkout's agent differs from the one it ships."""
    if artifact.key in _warned_stale:
        return
    _warned_stale.add(artifact.key)
    stale = runtime_artifact.stale_agent_files(artifact)
    if stale:
        log.warning(
            "VM runtime artifact %s ships an older agent (%s differ from the source tree): %s",
            artifact.path,
            ", ".join(stale),
            runtime_artifact.BUILD_HINT,
        )


class _NotReady(EngineError):
    """The readiness deadline passed."""


def _shared_dir(host: str, guest: str, readonly: bool) -> list[Any]:
    """virtiofs shares directories: a file volume shares its directory, and the guest binds
    just that file into the box (the rest of the directory stays outside the box root)."""
    path = Path(host)
    share, name = (path, "") if path.is_dir() else (path.parent, path.name)
    if "," in str(share):
        raise UnsupportedOptionError("volumes", f"the vm engine cannot share a path with a comma: {share}")
    return [str(share), guest, readonly, name]


def _qemu_pid(run: Path) -> int | None:
    try:
        return int((run / QEMU_PID_NAME).read_text())
    except (OSError, ValueError):
        return None


def _is_qemu(pid: int) -> bool:
    return b"qemu-system" in (procfs.argv0(pid) or b"")


def _allocated(path: Path) -> int:
    try:
        return path.stat().st_blocks * 512
    except OSError:
        return 0
