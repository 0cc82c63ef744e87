"""The keeper's helper launcher (agent/helperproc.py): what pasta and the proxies get from it,
since it replaced ``subprocess`` in the keeper — standard streams, only the fds passed, the
host guard's group with no supplementary groups, default SIGPIPE, exec errors as OSError,
and death with the keeper."""

from __future__ import annotations

import errno
import os
import select
import signal
import subprocess
import sys

import pytest

from boxlite.agent.helperproc import spawn

REPORT = (  # a shell (Python would ignore SIGPIPE itself): one "key value..." line per fact
    'echo "fds $(ls /proc/self/fd | tr "\\n" " ")"; echo "gid $(id -g) $(id -rg)"; echo "groups $(id -G)"; '
    'echo "stdin $(cat | wc -c)"; grep SigIgn /proc/self/status; echo "ppid $PPID"; echo to stderr >&2'
)


def _facts(text: str) -> dict[str, list[str]]:
    return {line.split()[0].rstrip(":"): line.split()[1:] for line in text.splitlines() if line.strip()}


def _read_all(fd: int) -> bytes:
    out = b""
    while chunk := os.read(fd, 65536):
        out += chunk
    os.close(fd)
    return out


@pytest.mark.skipif(os.geteuid() != 0, reason="setting the helper's group needs root")
def test_the_helper_gets_its_streams_fds_and_group_only() -> None:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    kept_r, kept_w = os.pipe()
    stray_r, stray_w = os.pipe()  # open in the caller, not passed: the helper must not hold it
    os.set_inheritable(stray_r, True)  # even one the caller left inheritable
    try:
        helper = spawn(["/bin/sh", "-c", REPORT], stdout=out_w, stderr=err_w, pass_fds=[kept_r], gid=165535)
    finally:
        for fd in (out_w, err_w):
            os.close(fd)
    facts = _facts(_read_all(out_r).decode())
    assert _read_all(err_r) == b"to stderr\n"
    assert helper.wait() == 0 and helper.wait() == 0
    assert facts["gid"] == ["165535", "165535"] and facts["groups"] == ["165535"]  # no supplementary ones
    assert facts["stdin"] == ["0"] and facts["ppid"] == [str(os.getpid())]
    assert not int(facts["SigIgn"][0], 16) & (1 << (signal.SIGPIPE - 1))  # default again after exec
    fds = {int(fd) for fd in facts["fds"]}
    assert kept_r in fds and stray_r not in fds and stray_w not in fds
    for fd in (kept_r, kept_w, stray_r, stray_w):
        os.close(fd)


def test_exec_errors_are_oserrors_and_leave_no_child() -> None:
    before = _children()
    with pytest.raises(OSError) as info:
        spawn(["/nonexistent/pasta", "--foreground"])
    assert info.value.errno == errno.ENOENT and "/nonexistent/pasta" in str(info.value)
    with pytest.raises(OSError):
        spawn([])
    assert _children() == before


def test_kill_then_wait_reports_the_signal() -> None:
    helper = spawn(["sleep", "1000"])
    helper.kill()
    assert helper.wait() == -signal.SIGKILL
    helper.kill()  # reaped already: nothing to signal, no error


MIDDLE = (
    "import os, sys, time\n"
    "from boxlite.agent.helperproc import spawn\n"
    "h = spawn(['sleep', '1000'])\n"
    "print(h.pid, flush=True)\n"
    "time.sleep(1000)\n"
)


def test_the_helper_dies_with_the_process_that_started_it() -> None:
    """pasta must not outlive a SIGKILLed keeper (it would serve a dead box's namespace)."""
    middle = subprocess.Popen([sys.executable, "-c", MIDDLE], stdout=subprocess.PIPE, text=True)
    try:
        assert middle.stdout is not None
        helper_pid = int(middle.stdout.readline())
        pidfd = os.pidfd_open(helper_pid)
        middle.kill()
        middle.wait()
        assert select.select([pidfd], [], [], 10)[0], "the helper outlived its parent"
        os.close(pidfd)
    finally:
        if middle.poll() is None:
            middle.kill()
            middle.wait()


def _children() -> set[int]:
    """This process's children, zombies included."""
    me, found = os.getpid(), set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == me:
                        found.add(int(entry))
            except (OSError, ValueError):
                pass
    return found
