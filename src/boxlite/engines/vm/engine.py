"""``VmEngine``: each box is a QEMU micro-VM supervised by a per-box shim process."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from ... import runtime_artifact
from ...errors import EngineError, UnsupportedOptionError
from ...layout import AGENT_SOCKET_NAME, CONSOLE_LOG_NAME, QEMU_PID_NAME, SHIM_PID_NAME, VM_CONF_NAME
from ..base import BoxSpec, Engine, RunningBox, process_start_time
from ..net import hostguard
from . import accel as accel_mod
from .disks import LOWER_CAPACITY, ensure_box_disk, ensure_empty_lower, ensure_layer_image
from .qemu import DEFAULT_MEMORY_MIB, DEFAULT_TB_SIZE_MIB, VmConfig, console_tail, qemu_binary, vcpus

log = logging.getLogger("boxlite.vm")
DEFAULT_DISK_GB = 2.0
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


def template_dir(spec: BoxSpec) -> Path:
    """Where snapshot templates live. They depend only on the artifact and the VM shape, so
    they are shared by all homes of a user: ``$BOXLITE_VM_TEMPLATES``, else
    ``$XDG_CACHE_HOME/boxlite/vm-templates`` (``~/.cache/...``)."""
    env = os.environ.get("BOXLITE_VM_TEMPLATES")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "boxlite" / "vm-templates"


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

    async def start(self, spec: BoxSpec) -> RunningBox:
        t0 = time.monotonic()
        artifact = await asyncio.to_thread(runtime_artifact.locate)
        _warn_if_stale(artifact)
        accel = await asyncio.to_thread(accel_mod.choose, artifact, cache_dir(spec))
        if spec.root.layers:
            lower = await asyncio.to_thread(ensure_layer_image, cache_dir(spec), spec.root)
        else:
            lower = await asyncio.to_thread(ensure_empty_lower, cache_dir(spec))
        disk = disk_path(spec)
        disk.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(ensure_box_disk, disk, spec.disk_size_gb or DEFAULT_DISK_GB)
        run = spec.run_dir
        run.mkdir(parents=True, exist_ok=True)
        console = spec.layout.console_log
        if console.exists():
            console.replace(spec.layout.console_log_prev)
        for stale in (spec.layout.boot_json, spec.layout.qemu_pid):
            stale.unlink(missing_ok=True)
        spec.agent_socket.unlink(missing_ok=True)
        vm = VmConfig(
            kernel=str(artifact.kernel),
            initramfs=str(artifact.initramfs),
            console=str(console),
            upper_disk=str(disk),
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
        if vm.network:
            await asyncio.to_thread(hostguard.install)  # before QEMU's slirp opens a socket: no way to the host
        timings = {"prepare_s": round(time.monotonic() - t0, 4)}
        deadline = t0 + spec.ready_timeout  # the whole start, template creation included
        if _snapshots_enabled(spec) and not vm.volumes:  # volumes need shared guest RAM: cold boot
            template = await self._template(spec, artifact, vm, deadline)
            if template is not None:
                timings["template_ready_s"] = round(time.monotonic() - t0, 4)
                try:
                    restore = replace(vm, incoming=str(template), ram_file=str(template.with_suffix(".ram")))
                    return await self._spawn_shim(spec, restore, timings, "restore", deadline)
                except _NotReady:
                    raise
                except EngineError as e:
                    log.warning("VM box %s: restoring the snapshot failed, booting cold: %s", spec.box_id, e)
                    _forget_template(template)
                    if console.exists():
                        console.replace(spec.layout.console_restore_failed)
        return await self._spawn_shim(spec, vm, timings, "boot", deadline)

    async def _template(
        self, spec: BoxSpec, artifact: runtime_artifact.RuntimeArtifact, vm: VmConfig, deadline: float
    ) -> Path | None:
        """The snapshot to restore for ``vm`` (created on first use), or None if unavailable."""
        upper_size = Path(str(vm.upper_disk)).stat().st_size
        key = hashlib.sha256(
            json.dumps(
                [
                    artifact.manifest["files"],
                    vm.accel,
                    vm.cpus,
                    vm.memory_mib,
                    upper_size,
                    LOWER_CAPACITY,
                    vm.debug,
                    _qemu_identity(),
                    TEMPLATE_FORMAT,
                ]
            ).encode()
        ).hexdigest()[:20]
        tdir = template_dir(spec)
        path = tdir / f"{key}.snap"
        ram = path.with_suffix(".ram")  # renamed into place last: its presence means complete
        if ram.exists():
            os.utime(path)  # "last used", for _forget_old_templates (noatime mounts)
            return path
        tdir.mkdir(parents=True, exist_ok=True)
        lock = await asyncio.to_thread(_lock_file, tdir / f"{key}.lock")
        try:
            if ram.exists():
                return path
            _forget_old_templates(tdir)
            work = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=tdir))
            try:
                placeholder = work / "upper.img"
                with open(placeholder, "wb") as f:
                    f.truncate(upper_size)
                tvm = replace(
                    vm,
                    console=str(work / CONSOLE_LOG_NAME),
                    upper_disk=str(placeholder),
                    layers=0,
                    template=True,
                    ram_file=str(work / "guest.ram"),
                    network=False,
                    ports=[],
                )
                status = await self._run_shim(
                    tvm,
                    work,
                    work / AGENT_SOCKET_NAME,
                    None,
                    _remaining(deadline),
                    {"mode": "template", "snapshot": str(path)},
                )
                if not status[1].startswith("template"):
                    log.warning(
                        "VM engine: could not create a snapshot template: %s\n%s",
                        status[1],
                        console_tail(work / CONSOLE_LOG_NAME, 10),
                    )
                    return None
                (work / "guest.ram").rename(ram)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        finally:
            lock.close()
        return path if ram.exists() else None

    async def _run_shim(
        self,
        vm: VmConfig,
        run: Path,
        agent_socket: Path,
        lifeline_fd: int | None,
        timeout: float,
        extra: dict[str, object],
    ) -> tuple[int | None, str]:
        """Spawn a shim and wait for its final status line: (shim pid, line); kills it on timeout."""
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
        pass_fds = [status_w] if lifeline_fd is None else [status_w, lifeline_fd]
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-c", _SHIM_BOOTSTRAP, _SRC_DIR, str(conf_path)],
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
            line = await asyncio.wait_for(_read_status(status_r, state), timeout)
        except asyncio.TimeoutError:
            self._force_kill(state.get("pid"), run)
            return state.get("pid"), f"timeout: not ready within {timeout:g}s"
        if not line.startswith(("ready", "template")):
            self._force_kill(state.get("pid"), run)
        return state.get("pid"), line

    async def _spawn_shim(
        self, spec: BoxSpec, vm: VmConfig, timings: dict[str, float], mode: str, deadline: float
    ) -> RunningBox:
        run = spec.run_dir
        t_spawn = time.monotonic()
        lifeline = None if spec.detach else spec.lifeline_fd
        extra: dict[str, object] = {"mode": mode, "pids_limit": spec.pids_limit, "memory_limit_mib": spec.memory_mib}
        pid, line = await self._run_shim(vm, run, spec.agent_socket, lifeline, _remaining(deadline), extra)
        if line.startswith("timeout: "):
            why = f"the agent was not ready within {spec.ready_timeout:g}s"
            raise _NotReady(self._boot_failure(spec, why))
        if pid is None or not line.startswith("ready"):
            raise EngineError(self._boot_failure(spec, line.removeprefix("error ") or "the shim died"))
        boot = json.loads(line[len("ready ") :] or "{}")
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
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not running.is_alive() and (qemu is None or process_start_time(qemu) != qemu_start):
                return
            await asyncio.sleep(0.02)
        raise EngineError(f"VM box {spec.box_id}: processes survived SIGKILL")

    def cleanup(self, spec: BoxSpec) -> None:
        for path in (spec.layout.vm_conf, spec.layout.qemu_pid, spec.layout.shim_pid):
            path.unlink(missing_ok=True)
        spec.agent_socket.unlink(missing_ok=True)

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
        qemu_pss = _pss_bytes(qemu) if qemu else 0
        out["memory_bytes"] = float(_pss_bytes(shim) + qemu_pss)
        out["qemu_pss_bytes"] = float(qemu_pss)
        out["cpu_usage_ns"] = sum(_cpu_seconds(pid) for pid in (shim, qemu) if pid) * 1e9
        out["disk_bytes"] = float(_allocated(disk_path(spec)))
        processes = _agent_stats(spec.agent_socket).get("processes")
        if isinstance(processes, (int, float)):
            out["pids"] = float(processes)
        return out


def _live_shim(run: Path) -> int | None:
    """The shim pid from ``run/shim.pid`` ("pid start-time") if that process still runs."""
    try:
        pid, start = (int(x) for x in (run / SHIM_PID_NAME).read_text().split())
    except (OSError, ValueError):
        return None
    return pid if process_start_time(pid) == start else None


def _agent_stats(path: Path, timeout: float = 2.0) -> dict[str, object]:
    """The agent's ``stats`` answer through a short blocking connection ({} on failure)."""
    import socket

    from ...agent import protocol as p
    from ...client.agent_client import unix_address

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            with unix_address(path) as address:
                sock.connect(address)
            sock.sendall(p.encode_json(p.REQUEST, 1, {"op": "stats"}))
            frames = p.FrameReader()
            while True:
                data = sock.recv(65536)
                if not data:
                    return {}
                frames.feed(data)
                for kind, channel, payload in frames:
                    if kind == p.RESPONSE and channel == 1:
                        return p.decode_json(payload)
    except (OSError, p.FrameError):
        return {}


async def _read_status(fd: int, state: dict[str, int]) -> str:
    """Read the shim's status lines until ``ready``/``error``/EOF; the pid goes to ``state``."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    try:
        while True:
            line = (await reader.readline()).decode(errors="replace").strip()
            if not line:
                return ""
            if line.startswith("pid "):
                state["pid"] = int(line[4:])
            elif line.startswith(("ready", "error", "template")):
                return line
    finally:
        transport.close()


TEMPLATE_MAX_AGE = 14 * 86400
TEMPLATE_FORMAT = 4  # 2: guest RAM in .ram, mapped by restored boxes; 3: + a NIC; 4: RTC back


def _forget_template(snap: Path) -> None:
    """Delete a template (boxes mapping its RAM keep their copy: the inode lives on)."""
    for suffix in (".ram", ".snap", ".lock"):
        snap.with_suffix(suffix).unlink(missing_ok=True)


def _forget_old_templates(tdir: Path) -> None:
    """Delete snapshot templates not used for two weeks (older artifacts, other shapes)."""
    now = time.time()
    for snap in tdir.glob("*.snap"):
        try:
            st = snap.stat()
            if now - max(st.st_atime, st.st_mtime) > TEMPLATE_MAX_AGE:
                _forget_template(snap)
        except OSError:
            pass


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


def _remaining(deadline: float) -> float:
    return max(0.2, deadline - time.monotonic())


def _shared_dir(host: str, guest: str, readonly: bool) -> list[Any]:
    """virtiofs shares directories: a file volume shares its directory, and the guest binds
    just that file into the box (the rest of the directory stays outside the box root)."""
    path = Path(host)
    share, name = (path, "") if path.is_dir() else (path.parent, path.name)
    if "," in str(share):
        raise UnsupportedOptionError("volumes", f"the vm engine cannot share a path with a comma: {share}")
    return [str(share), guest, readonly, name]


def _snapshots_enabled(spec: BoxSpec) -> bool:
    if os.environ.get("BOXLITE_VM_SNAPSHOT", "1") in ("0", "false", "no"):
        return False
    return spec.vm_snapshot


def _qemu_identity() -> str:
    """Changes whenever the QEMU binary does (snapshots are only restored by the same QEMU)."""
    st = Path(qemu_binary()).stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def _lock_file(path: Path) -> IO[str]:
    f = open(path, "a")  # noqa: SIM115 - returned to the caller, which closes it
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def _qemu_pid(run: Path) -> int | None:
    try:
        return int((run / QEMU_PID_NAME).read_text())
    except (OSError, ValueError):
        return None


def _is_qemu(pid: int) -> bool:
    try:
        return b"qemu-system" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False


def _pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            rest = f.read().rsplit(b")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def _allocated(path: Path) -> int:
    try:
        return path.stat().st_blocks * 512
    except OSError:
        return 0
