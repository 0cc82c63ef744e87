"""Tell an out-of-memory kill from any other SIGKILL (stdlib only).

The box's memory cgroup counts the processes the OOM killer killed in it: ``oom_kill N`` in
``memory.events`` (cgroup v2: the VM guest, v2 hosts) or ``memory.oom_control`` (v1). The agent
reads the counter when a command starts and again when it dies of SIGKILL: a higher count means
the kernel killed it for memory. The file is opened once, before the box root hides the cgroup
tree; the descriptor is only ever read.
"""

from __future__ import annotations

import os

COUNTER_FILES = ("memory.events", "memory.oom_control")


def open_counter(cgroup_dir: str) -> int | None:
    """A read-only fd of ``cgroup_dir``'s OOM-kill counter file, or None (no memory cgroup)."""
    for name in COUNTER_FILES:
        try:
            return os.open(os.path.join(cgroup_dir, name), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
    return None


def read_kills(fd: int | None) -> int | None:
    """The current ``oom_kill`` count of the counter file ``fd`` (None if unknown)."""
    if fd is None:
        return None
    try:
        data = os.pread(fd, 4096, 0)
    except OSError:
        return None
    for line in data.split(b"\n"):
        key, _, value = line.partition(b" ")
        if key == b"oom_kill" and value.strip().isdigit():
            return int(value)
    return None
