"""Host side of the agent zygote: one pre-imported fork server per runtime process.

The zygote holds no box: each box it forks lives on in its own keeper and PID 1
(``agent/keeper.py``, ``agent/nsboot.py``). It exits when its socket closes, which the runtime
process's death does however it dies, so it needs no tie of its own to the lifeline."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from ...errors import EngineError

BOOTSTRAP = "import sys; sys.path.insert(0, sys.argv[1]); from agent.zygote import main; del sys.argv[1]; main()"


AGENT_PARENT = Path(__file__).resolve().parents[2]  # the directory holding ``agent/``


def agent_python() -> str:
    """Interpreter for the agent: ``$BOXLITE_AGENT_PYTHON``, Debian's python3, or ours.
    (Here, importable without asyncio, for the CLI's :func:`prestart`; the engine uses it too.)"""
    explicit = os.environ.get("BOXLITE_AGENT_PYTHON")
    if explicit:
        return explicit
    system = "/usr/bin/python3"
    return system if os.access(system, os.X_OK) else sys.executable


_warm: dict[tuple[str, str], tuple[subprocess.Popen[bytes], socket.socket]] = {}


def prestart(python: str, agent_parent: Path) -> None:
    """Start the zygote for ``python`` now, so that its interpreter start-up and agent imports
    (~50 ms) overlap with the caller's own imports; the first :class:`Zygote` of this process
    for the same interpreter adopts it. Unused, it exits with this process (its socket closes)."""
    key = (python, str(agent_parent))
    if key in _warm:
        return
    zygote = Zygote(python, agent_parent)
    zygote._start()
    assert zygote._proc is not None and zygote._sock is not None
    _warm[key] = (zygote._proc, zygote._sock)


class Zygote:
    """Starts the zygote on first use and restarts it if it died."""

    def __init__(self, python: str, agent_parent: Path) -> None:
        self.python, self.agent_parent = python, agent_parent
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _start(self) -> None:
        warm = _warm.pop((self.python, str(self.agent_parent)), None)
        if warm is not None:
            proc, sock = warm
            if proc.poll() is None:  # started ahead by prestart(): its interpreter start-up is paid
                self._proc, self._sock = proc, sock
                return
            sock.close()
            proc.wait()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [self.python, "-I", "-S", "-c", BOOTSTRAP, str(self.agent_parent), str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        except OSError as e:
            ours.close()
            raise EngineError(f"cannot run the agent interpreter {self.python}: {e}") from None
        finally:
            theirs.close()
        self._sock = ours

    def spawn(self, config: dict[str, Any], fds: list[int]) -> None:
        """Ask the zygote to boot one box; ``fds``: status pipe, boot log[, lifeline]."""
        with self._lock:
            for attempt in (1, 2):
                if not self._alive():
                    self.close()
                    self._start()
                assert self._sock is not None
                try:
                    socket.send_fds(self._sock, [json.dumps(config).encode()], fds)
                    return
                except OSError as e:
                    self.close()
                    if attempt == 2:
                        raise EngineError(f"the namespace zygote is not answering: {e}") from None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
