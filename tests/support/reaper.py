"""Daemons a test or bench starts (``ray start``) run under a child *subreaper* that ends them all.

``ray start`` daemonizes: its processes leave the starter's tree, and Ray's agents overwrite
their environment and command line with a process title, so neither the tree nor an inherited
variable finds all of them afterwards (session 30: a benchmark's Ray agents outlived it and
stopped the next Ray test). A process marked ``PR_SET_CHILD_SUBREAPER`` adopts every orphan of
its subtree instead of init, so everything the commands it runs leave behind stays its
descendant. :class:`Reaper` runs such a process (this file as ``__main__``): it runs commands on
request and, when its stdin closes (``close()``, or the owner died), ends its whole subtree
(SIGTERM, then SIGKILL after ``grace`` seconds, until none is left) and exits.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


class Reaper:
    """The owner's side: ``run`` commands under the reaper, ``close`` ends what they started."""

    def __init__(self, grace: float = 15.0) -> None:
        self.grace = grace
        self.proc = subprocess.Popen(
            [sys.executable, "-I", __file__, str(grace)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, argv: list[str], env: dict[str, str], timeout: float = 300.0) -> tuple[int, str]:
        """Exit status and output (stdout + stderr) of ``argv``, run as the reaper's child."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"argv": argv, "env": env, "timeout": timeout}) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        return int(reply["rc"]), str(reply["out"])

    def close(self) -> list[int]:
        """End everything started under the reaper; the pids still alive afterwards (none)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        left = json.loads(self.proc.stdout.readline() or "[]")
        self.proc.wait(timeout=self.grace + 60)
        return [int(p) for p in left]


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _alive(pids: list[int]) -> list[int]:
    """Those not gone and not zombies (a zombie is reaped on the next ``_reap``)."""
    out = []
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                out.append(pid)
        except (OSError, IndexError):
            continue
    return out


def _end_all(grace: float, tree: Callable[[int], list[int]]) -> list[int]:
    deadline = time.monotonic() + grace
    sig = signal.SIGTERM
    while True:
        _reap()
        left = _alive(tree(os.getpid())[1:])  # (the first is this process)
        if not left:
            return []
        if time.monotonic() > deadline + 30:  # SIGKILL for 30 s and still there: report them
            return left
        if time.monotonic() > deadline:
            sig = signal.SIGKILL
        for pid in left:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (run with -I)
    from support.hostprocs import process_tree

    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    grace = float(sys.argv[1]) if len(sys.argv) > 1 else 15.0
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], 1.0)
        _reap()  # orphans adopted meanwhile
        if not ready:
            continue
        line = sys.stdin.readline()
        if not line:
            break
        req = json.loads(line)
        with tempfile.TemporaryFile("w+") as out:  # not a pipe: a daemon holding it would hold us
            try:
                done = subprocess.run(req["argv"], env=req["env"], stdout=out, stderr=out, timeout=req["timeout"])
                rc = done.returncode
            except (OSError, subprocess.TimeoutExpired) as e:
                rc = -1
                print(e, file=out)
            out.seek(0)
            reply = {"rc": rc, "out": out.read()[-20000:]}
        print(json.dumps(reply), flush=True)
    print(json.dumps(_end_all(grace, process_tree)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
