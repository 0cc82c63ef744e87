"""Host-side bookkeeping of tests and benches: free loopback ports, the processes a test started."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS's choice; a later bind may still race)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def processes_with_env(mark: bytes) -> list[int]:
    """Pids (not ours) whose environment holds ``mark``, e.g. ``BOXLITE_HOME=<dir>/``: the processes
    started for one test's homes, which their children (Ray's workers, boxes) inherit."""
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            with contextlib.suppress(OSError):
                if mark in Path(f"/proc/{pid}/environ").read_bytes():
                    pids.append(int(pid))
    return pids


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants that are still alive (through every thread's children)."""
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        if not os.path.exists(f"/proc/{p}"):
            continue
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out
