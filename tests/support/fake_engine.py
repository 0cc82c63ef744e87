"""A fake engine for tests: boxes without root, namespaces, cgroups or a VM.

Each box is the real guest agent running as an ordinary process of the test's user
(:mod:`fake_agent`), so ``runtime/``, the public API and the REST server can be exercised
without privileges; the real engines keep their own suites. Select it with
``Options(engine="fake")`` after :func:`register`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path

import boxlite.engines
from boxlite.engines.base import BoxSpec, Engine, RunningBox, process_start_time
from boxlite.engines.namespace.zygote import agent_python  # the agent and fake_agent.py: stdlib only
from boxlite.engines.status import read_status
from boxlite.errors import EngineError
from boxlite.runtime.engines import register_engine
from support.fake_agent import descendants

NAME = "fake"
AGENT_PARENT = Path(boxlite.engines.__file__).resolve().parents[1]  # holds ``agent/``
RUNNER = Path(__file__).with_name("fake_agent.py")


class FakeEngine(Engine):
    """Boxes as unconfined agent processes (see the module docstring)."""

    name = NAME

    async def start(self, spec: BoxSpec) -> RunningBox:
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        spec.agent_socket.unlink(missing_ok=True)
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        lifeline = None if spec.detach else spec.lifeline_fd
        config = {
            "agent_parent": str(AGENT_PARENT),
            "run_dir": str(spec.run_dir),
            "status_fd": status_w,
            "lifeline_fd": lifeline,
        }
        log = open(spec.box_dir / "boot.log", "ab")  # noqa: SIM115 - closed below, the child keeps it
        try:
            proc = subprocess.Popen(
                [agent_python(), "-I", "-S", str(RUNNER), json.dumps(config)],
                pass_fds=[status_w] + ([lifeline] if lifeline is not None else []),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        except OSError as e:
            os.close(status_r)
            raise EngineError(f"fake box {spec.box_id}: cannot run the agent: {e}") from None
        finally:
            os.close(status_w)
            log.close()
        await asyncio.to_thread(proc.wait)  # it forks the agent and exits
        state: dict[str, int] = {}
        try:
            status = await asyncio.wait_for(read_status(status_r, state), spec.ready_timeout)
        except asyncio.TimeoutError:
            _kill(state.get("pid"))
            raise EngineError(f"fake box {spec.box_id} was not ready after {spec.ready_timeout:g}s") from None
        finally:
            os.close(status_r)
        pid = state.get("pid")
        start = process_start_time(pid) if pid else None
        if status.word != "ready" or pid is None or start is None:
            _kill(pid)
            raise EngineError(f"fake box {spec.box_id} failed to start: {status.arg or 'the agent exited'}")
        return RunningBox(pid=pid, pid_start=start, agent_socket=spec.agent_socket)

    async def kill(self, spec: BoxSpec, running: RunningBox) -> None:
        if running.is_alive():
            _kill(running.pid)
        await running.wait_gone(5)
        self.cleanup(spec)

    def cleanup(self, spec: BoxSpec) -> None:
        spec.agent_socket.unlink(missing_ok=True)


def _kill(pid: int | None) -> None:
    """SIGKILL the agent and every process below it (box processes have sessions of their own)."""
    if not pid:
        return
    for target in [pid, *descendants(pid)]:
        try:
            os.kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def register() -> None:
    """Make ``engine="fake"`` selectable in this process."""
    register_engine(NAME, FakeEngine)
