"""``VmEngine``: each box is a QEMU micro-VM supervised by a per-box shim process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ... import runtime_artifact
from ...errors import EngineError
from ..base import BoxSpec, Engine, RunningBox, process_start_time
from . import accel as accel_mod
from .disks import ensure_box_disk, ensure_layer_image
from .qemu import DEFAULT_MEMORY_MIB, DEFAULT_TB_SIZE_MIB, VmConfig, console_tail, vcpus

DEFAULT_DISK_GB = 2.0
_PKG_DIR = str(Path(__file__).resolve().parents[2])  # .../boxlite
# Start the shim without running boxlite/__init__.py (the public API pulls in httpx & co.):
# a bare package module pointing at the package dir keeps the shim at ~15 MiB PSS.
_SHIM_BOOTSTRAP = (
    "import sys, types; pkg = types.ModuleType('boxlite'); pkg.__path__ = [sys.argv[1]]; "
    "sys.modules['boxlite'] = pkg; from boxlite.engines.vm.shim import main; sys.exit(main(sys.argv[2:]))"
)


def home_of(spec: BoxSpec) -> Path:
    """The BoxLite home of a box (``spec.extra['home']``, else ``<box_dir>/../..``)."""
    home = spec.extra.get("home")
    return Path(str(home)) if home else spec.box_dir.parent.parent


def cache_dir(spec: BoxSpec) -> Path:
    return home_of(spec) / "cache" / "vm"


def disk_path(spec: BoxSpec) -> Path:
    return spec.box_dir / "vm" / "disk.ext4"


class VmEngine(Engine):
    """Boxes as micro-VMs: own kernel, virtio-serial agent channel, ext4 root disks."""

    name = "vm"

    async def start(self, spec: BoxSpec) -> RunningBox:
        t0 = time.monotonic()
        artifact = await asyncio.to_thread(runtime_artifact.locate)
        accel = await asyncio.to_thread(accel_mod.choose, artifact, cache_dir(spec))
        lower = None
        if spec.root.layers:
            lower = await asyncio.to_thread(ensure_layer_image, cache_dir(spec), spec.root)
        disk = disk_path(spec)
        disk.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(ensure_box_disk, disk, spec.disk_size_gb or DEFAULT_DISK_GB)
        run = spec.run_dir
        run.mkdir(parents=True, exist_ok=True)
        console = spec.box_dir / "console.log"
        if console.exists():
            console.replace(spec.box_dir / "console.log.1")
        for stale in ("boot.json", "qemu.pid"):
            (run / stale).unlink(missing_ok=True)
        spec.agent_socket.unlink(missing_ok=True)
        vm = VmConfig(
            kernel=str(artifact.kernel),
            initramfs=str(artifact.initramfs),
            console=str(console),
            upper_disk=str(disk),
            lower_disk=str(lower) if lower else None,
            layers=len(spec.root.layers),
            hostname=spec.hostname,
            cpus=vcpus(spec.cpus),
            memory_mib=spec.memory_mib or DEFAULT_MEMORY_MIB,
            accel=accel.name,
            tb_size_mib=int(str(spec.extra.get("vm_tb_size_mib") or DEFAULT_TB_SIZE_MIB)),
            debug=artifact.debug,
        )
        prepared = time.monotonic()
        return await self._spawn_shim(spec, vm, {"prepare_s": round(prepared - t0, 4)})

    async def _spawn_shim(self, spec: BoxSpec, vm: VmConfig, timings: dict[str, float]) -> RunningBox:
        run = spec.run_dir
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        conf = {
            "vm": vm.to_json(),
            "run_dir": str(run),
            "console": vm.console,
            "agent_socket": str(spec.agent_socket),
            "status_fd": status_w,
            "lifeline_fd": None if spec.detach else spec.lifeline_fd,
        }
        conf_path = run / "vm.json"
        conf_path.write_text(json.dumps(conf, indent=1))
        pass_fds = [status_w]
        if conf["lifeline_fd"] is not None:
            pass_fds.append(int(spec.lifeline_fd))  # type: ignore[arg-type]
        t_spawn = time.monotonic()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-c", _SHIM_BOOTSTRAP, _PKG_DIR, str(conf_path)],
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
            ready = await asyncio.wait_for(_read_status(status_r, state), spec.ready_timeout)
        except asyncio.TimeoutError:
            self._force_kill(state.get("pid"), run)
            why = f"the agent was not ready within {spec.ready_timeout:g}s"
            raise EngineError(self._boot_failure(spec, why)) from None
        pid = state.get("pid")
        if pid is None or not ready.startswith("ready"):
            self._force_kill(pid, run)
            raise EngineError(self._boot_failure(spec, ready.removeprefix("error ") or "the shim died"))
        boot = json.loads(ready[len("ready ") :] or "{}")
        boot.update(timings, start_to_ready_s=round(time.monotonic() - t_spawn, 4))
        (run / "boot.json").write_text(json.dumps(boot))
        start = process_start_time(pid)
        if start is None:
            raise EngineError(self._boot_failure(spec, "the shim exited right after the agent became ready"))
        return RunningBox(pid=pid, pid_start=start, agent_socket=spec.agent_socket)

    def _boot_failure(self, spec: BoxSpec, why: str) -> str:
        msg = f"VM box {spec.box_id} failed to start: {why}"
        shim_log = console_tail(spec.run_dir / "shim.log", 5)
        if shim_log:
            msg += f"\n--- shim/QEMU log (last lines) ---\n{shim_log}"
        tail = console_tail(spec.box_dir / "console.log")
        msg += f"\n--- console ({spec.box_dir / 'console.log'}, last lines) ---\n{tail or '(empty)'}"
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
        for name in ("vm.json", "qemu.pid"):
            (spec.run_dir / name).unlink(missing_ok=True)
        spec.agent_socket.unlink(missing_ok=True)

    def metrics(self, spec: BoxSpec, running: RunningBox | None) -> dict[str, float]:
        out: dict[str, float] = {}
        try:
            boot = json.loads((spec.run_dir / "boot.json").read_text())
            out.update({f"boot_{k}": float(v) for k, v in boot.items() if k.endswith("_s")})
        except (OSError, ValueError):
            pass
        if running is None or not running.is_alive():
            return out
        qemu = _qemu_pid(spec.run_dir)
        pss = 0
        for pid in (running.pid, qemu):
            if pid:
                pss += _pss_bytes(pid)
        out["memory_pss_bytes"] = float(pss)
        if qemu:
            out["qemu_pss_bytes"] = float(_pss_bytes(qemu))
            out["cpu_seconds"] = _cpu_seconds(qemu)
        out["disk_bytes"] = float(_allocated(disk_path(spec)))
        return out


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
            elif line.startswith(("ready", "error")):
                return line
    finally:
        transport.close()


def _qemu_pid(run: Path) -> int | None:
    try:
        return int((run / "qemu.pid").read_text())
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
