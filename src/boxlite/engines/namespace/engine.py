"""The namespace engine: a box is a tree of namespaces whose PID 1 is the agent."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from ...agent.protocol import STATUS_ERROR, STATUS_READY
from ...errors import EngineError
from ..base import BoxSpec, Engine, RunningBox, process_start_time
from ..status import read_status
from . import cgroups, network
from .zygote import Zygote

AGENT_PARENT = Path(__file__).resolve().parents[2]  # the directory holding ``agent/``


def agent_python() -> str:
    """Interpreter for the agent: ``$BOXLITE_AGENT_PYTHON``, Debian's python3, or ours."""
    explicit = os.environ.get("BOXLITE_AGENT_PYTHON")
    if explicit:
        return explicit
    system = "/usr/bin/python3"
    return system if os.access(system, os.X_OK) else sys.executable


def _python_prefix(python: str) -> str:
    real = os.path.realpath(python)
    return str(Path(real).parents[1])


class NamespaceEngine(Engine):
    """Linux namespaces + cgroups + seccomp; needs root (or CAP_SYS_ADMIN) on the host."""

    name = "namespace"

    def __init__(self) -> None:
        self._zygotes: dict[str, Zygote] = {}

    async def start(self, spec: BoxSpec) -> RunningBox:
        if os.geteuid() != 0:
            raise EngineError("the namespace engine needs root on the host (it maps box users to a uid range)")
        self._prepare_dirs(spec)
        groups = cgroups.create(spec.box_id, spec.memory_mib, spec.cpus, spec.pids_limit)
        groups.save(spec.box_dir / "cgroups.json")
        python = agent_python()
        status_r, status_w = os.pipe()
        config = {  # the zygote adds status_fd, log_fd and lifeline_fd (passed as fds)
            "cgroup_procs": groups.procs_files,
            "uid_base": spec.root.uid_base,
            "hostname": spec.hostname,
            "memory_mib": spec.memory_mib,
            "sup_dir": str(spec.box_dir / "sup"),
            "run_dir": str(spec.run_dir),
            "layer_links": str(spec.box_dir / "layers"),
            "layer_count": len(spec.root.layers),
            "upperdir": str(spec.box_dir / "upper"),
            "workdir": str(spec.box_dir / "work"),
            "ro_binds": sorted({_python_prefix(python), str(AGENT_PARENT)}),
            "volumes": [list(v) for v in spec.volumes],
            "resolv_conf": str(network.resolv_conf(spec.run_dir)) if spec.network or spec.ports else None,
        }
        log = os.open(spec.box_dir / "boot.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fds = [status_w, log] + ([spec.lifeline_fd] if spec.lifeline_fd is not None else [])
        started = time.monotonic()
        try:
            self._zygote(python).spawn(config, fds)
        except BaseException:
            os.close(status_r)
            groups.remove()
            raise
        finally:
            os.close(status_w)
            os.close(log)
        try:
            pid = await asyncio.wait_for(self._await_ready(status_r, spec), spec.ready_timeout)
        except BaseException as e:
            self._abort(groups)
            if isinstance(e, asyncio.TimeoutError):
                raise EngineError(
                    f"box {spec.box_id} was not ready after {spec.ready_timeout:g}s{self._boot_log_tail(spec)}"
                ) from None
            raise
        finally:
            os.close(status_r)
        start_time = process_start_time(pid)
        if start_time is None:
            raise EngineError(f"box {spec.box_id} died right after start{self._boot_log_tail(spec)}")
        if spec.network or spec.ports:
            try:
                network.start_pasta(pid, spec.box_dir, [network.PortMapping(*p) for p in spec.ports])
            except BaseException:
                _kill(pid)
                self._abort(groups)
                raise
        spec.extra["boot_ms"] = (time.monotonic() - started) * 1000
        return RunningBox(pid=pid, pid_start=start_time, agent_socket=spec.agent_socket)

    async def _await_ready(self, status_r: int, spec: BoxSpec) -> int:
        state: dict[str, int] = {}
        status = await read_status(status_r, state)
        if status.word == STATUS_ERROR:
            raise EngineError(f"box {spec.box_id} failed to start: {status.arg}")
        if status.word != STATUS_READY or not state.get("pid"):
            raise EngineError(f"box {spec.box_id} failed to start{self._boot_log_tail(spec)}")
        return state["pid"]

    def _abort(self, groups: cgroups.BoxCgroups) -> None:
        for pid in groups_pids(groups):
            _kill(pid)
        groups.remove()

    def _zygote(self, python: str) -> Zygote:
        if self._zygotes.get(python) is None:
            self._zygotes[python] = Zygote(python, AGENT_PARENT)
        return self._zygotes[python]

    @staticmethod
    def _boot_log_tail(spec: BoxSpec, lines: int = 8) -> str:
        try:
            text = (spec.box_dir / "boot.log").read_text(errors="replace").strip()
        except OSError:
            return ""
        tail = "\n".join(text.splitlines()[-lines:])
        return f"; boot log:\n{tail}" if tail else ""

    def _prepare_dirs(self, spec: BoxSpec) -> None:
        uid = spec.root.uid_base
        for name in ("upper", "work", "run", "sup"):
            (spec.box_dir / name).mkdir(parents=True, exist_ok=True)
        upper = spec.box_dir / "upper"
        if upper.stat().st_uid != uid:
            bottom = spec.root.layers[0] if spec.root.layers else None
            os.chown(upper, uid, uid)
            os.chmod(upper, (bottom.stat().st_mode & 0o7777) if bottom else 0o755)
        os.chown(spec.run_dir, uid, uid)
        os.chmod(spec.run_dir, 0o700)
        sock = spec.agent_socket
        if sock.exists() or sock.is_symlink():
            sock.unlink()
        links = spec.box_dir / "layers"
        shutil.rmtree(links, ignore_errors=True)
        links.mkdir()
        for i, layer in enumerate(spec.root.layers):
            os.symlink(layer, links / str(i))

    async def kill(self, spec: BoxSpec, running: RunningBox) -> None:
        if running.is_alive():
            _kill(running.pid)
        deadline = time.monotonic() + 5
        while running.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        self.cleanup(spec)

    def cleanup(self, spec: BoxSpec) -> None:
        network.stop_pasta(spec.box_dir)
        groups = cgroups.BoxCgroups.load(spec.box_dir / "cgroups.json")
        if groups is not None:
            groups.remove()
            (spec.box_dir / "cgroups.json").unlink(missing_ok=True)
        for path in (spec.agent_socket,):
            path.unlink(missing_ok=True)

    def metrics(self, spec: BoxSpec, running: RunningBox | None) -> dict[str, float]:
        groups = cgroups.BoxCgroups.load(spec.box_dir / "cgroups.json")
        return groups.read() if groups is not None else {}


def groups_pids(groups: cgroups.BoxCgroups) -> list[int]:
    pids: set[int] = set()
    for procs in groups.procs_files:
        try:
            with open(procs) as f:
                pids.update(int(x) for x in f.read().split())
        except OSError:
            pass
    return sorted(pids)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
