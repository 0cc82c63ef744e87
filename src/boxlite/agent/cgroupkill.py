"""Killing and thawing a box's cgroup (stdlib only, no ctypes).

The keeper runs these when it releases a box, and the host's engine runs them when the keeper
could not (killed, or still busy): one definition both sides share, in a module light enough for
every box start on the host to import."""

from __future__ import annotations

import os
import signal


def kill_cgroup_members(path: str) -> None:
    """SIGKILL the processes in cgroup ``path``: at once with v2's ``cgroup.kill``, else by pid."""
    try:
        with open(os.path.join(path, "cgroup.kill"), "w") as f:
            f.write("1")
        return
    except OSError:
        pass
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            pids = [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    thaw_cgroup(path)


def thaw_cgroup(path: str) -> None:
    """Thaw a v1 freezer cgroup (a paused box): its SIGKILLed tasks die only once thawed. v2's
    ``cgroup.kill`` kills frozen tasks, and a v2 box is thawed too so that any signal lands."""
    for name, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
        try:
            with open(os.path.join(path, name), "w") as f:
                f.write(value)
        except OSError:
            pass
