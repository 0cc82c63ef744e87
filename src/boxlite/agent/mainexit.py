"""How the box's main process ended, as a small file in the box's run directory (stdlib only).

Whoever owns the main process writes ``<run>/main.exit`` when it ends: the namespace engine's
agent (the run directory is bind-mounted at its ``/run/boxlite``) or the VM engine's relay on the
host. The host reads it to report the box as *exited* with the process's status. The writer may
be a hostile box (the namespace agent runs in it), so the reader trusts nothing: a regular file
only (no symlink, FIFO or device), at most ``MAX_BYTES``, and only well-formed numbers.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Mapping

from . import leanjson

NAME = "main.exit"
MAX_BYTES = 4096


class MainExit:
    """How the main process ended (a plain class: ``dataclasses`` costs the agent ~7 ms to import)."""

    __slots__ = ("exit_code", "finished_at", "oom_killed", "signal")

    def __init__(self, exit_code: int, signal: int | None, oom_killed: bool, finished_at: float | None) -> None:
        self.exit_code = exit_code
        """0-255; 128+N for signal N."""
        self.signal, self.oom_killed, self.finished_at = signal, oom_killed, finished_at

    def _key(self) -> tuple[int, int | None, bool, float | None]:
        return self.exit_code, self.signal, self.oom_killed, self.finished_at

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MainExit) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return "MainExit(exit_code={!r}, signal={!r}, oom_killed={!r}, finished_at={!r})".format(*self._key())


def write(run_dir: str, exit_body: Mapping[str, object]) -> None:
    """Record the main process's end (``exit_body``: an EXIT frame's body); atomic rename."""
    code, sig = exit_body.get("exit_code"), exit_body.get("signal")
    record = {
        "exit_code": code if type(code) is int else None,
        "signal": sig if type(sig) is int else None,
        "oom_killed": bool(exit_body.get("oom_killed")),
        "finished_at": time.time(),
    }
    path = os.path.join(run_dir, NAME)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, leanjson.dumps(record).encode())
    finally:
        os.close(fd)
    os.rename(tmp, path)


def clear(run_dir: str) -> None:
    """Forget a previous run's record (before the box starts again)."""
    try:
        os.unlink(os.path.join(run_dir, NAME))
    except FileNotFoundError:
        pass


def read(run_dir: str) -> MainExit | None:
    """The record, or None when there is none or it is not a well-formed record."""
    try:
        fd = os.open(os.path.join(run_dir, NAME), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, MAX_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        return None
    try:
        body = leanjson.loads(data)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    code, sig, at = body.get("exit_code"), body.get("signal"), body.get("finished_at")
    if type(code) is not int or not 0 <= code <= 255:
        return None
    if sig is not None and (type(sig) is not int or not 0 < sig < 128):
        return None
    finished_at = float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else None
    return MainExit(code, sig, body.get("oom_killed") is True, finished_at)
