"""The fake engine's box: the real agent (``agent/server.py``) as a plain, unconfined process.

Run as ``python -I -S fake_agent.py <config json>`` by :mod:`fake_engine`. It imports the agent
the way a box does (top-level package ``agent``), makes the privilege changes the agent asks for
no-ops (the process has no privilege to give up: it runs as the test's user, possibly not root),
serves on the box's socket and reports ``pid``/``ready`` on the status pipe like nsboot does.
The "box" therefore shares the host's file system, users and network: a test double for the
layers above the engine, never an isolation boundary.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (what a real box's PID namespace would hold)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
                ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
            except (OSError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def main() -> None:
    config = json.loads(sys.argv[1])
    if os.fork():  # the engine reaps this process at once; the agent is nobody's child to wait for
        os._exit(0)
    os.setsid()
    sys.path.insert(0, config["agent_parent"])
    from agent import linux  # type: ignore[import-not-found]
    from agent import protocol as p  # type: ignore[import-not-found]
    from agent.server import Agent  # type: ignore[import-not-found]
    from agent.spawn import Confinement  # type: ignore[import-not-found]

    for name in ("setgroups", "setresuid", "setresgid"):  # user switches: stay who we are
        setattr(os, name, lambda *_: None)

    class FakeAgent(Agent):  # type: ignore[misc]
        def _signal_all(self, sig: int) -> None:
            """As PID 1 of a box would (``kill(-1)``): every process of the box, spawner included."""
            super()._signal_all(sig)
            for pid in descendants(os.getpid()):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

    status = int(config["status_fd"])
    try:
        run_dir = config["run_dir"]
        os.chdir(run_dir)  # bind by a short relative name: tmp paths may exceed sun_path
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind("agent.sock")
        os.chmod("agent.sock", 0o600)
        sock.listen(64)
        os.chdir("/")
        conf = Confinement(root="/", seccomp_program=None, cap_last=linux.last_cap(), drop_caps=False)
        agent = FakeAgent(conf, config.get("lifeline_fd"), log_dir=run_dir)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        agent.listen(sock)
    except BaseException as e:
        os.write(status, p.status_line(p.STATUS_ERROR, repr(e)))
        raise
    os.write(status, p.status_line(p.STATUS_PID, str(os.getpid())))
    os.write(status, p.status_line(p.STATUS_READY))
    os.close(status)
    agent.start_spawner()
    agent.serve_forever()


if __name__ == "__main__":
    main()
