"""Run the keeper's host-side helpers (pasta, the DNS and secret proxies) with ``os`` alone.

``subprocess`` would import ``threading`` and a dozen modules into every networked box's keeper,
a long-lived fork of the zygote: measured, they and the thread that wrote the box's sysctls
left ~2.9 MiB private to each keeper (docs/performance.md). The keeper is single-threaded, so a
plain fork followed by exec is safe, and it needs only this much of ``Popen``: the child's
standard streams, the fds it keeps, its group, death with the keeper, and exec errors reported
to the caller as ``OSError``. Stdlib only.
"""

from __future__ import annotations

import os
import signal

from . import linux

_RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
"""Python ignores these at start-up; an ignored disposition would survive exec into the helper."""


class Helper:
    """A started helper: the keeper's unreaped child, so its pid cannot be reused before wait()."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)


def spawn(
    argv: list[str],
    *,
    stdout: int | None = None,
    stderr: int | None = None,
    pass_fds: tuple[int, ...] | list[int] = (),
    gid: int | None = None,
) -> Helper:
    """Fork and exec ``argv`` (looked up on PATH when it has no slash). stdin is /dev/null;
    ``stdout``/``stderr``: fds to give it (None: the caller's); every other fd is closed but
    ``pass_fds``. The child drops supplementary groups and takes ``gid`` (if given), gets
    SIGKILL when the calling thread dies (and exits at once if the caller is already gone).
    Raises OSError (the child's errno) if any of that or exec fails."""
    if not argv:
        raise OSError("empty command")
    parent = os.getpid()
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except OSError:
        os.close(err_r)
        os.close(err_w)
        raise
    if pid == 0:  # the child: report any failure through err_w, never return
        try:
            os.close(err_r)
            _become_helper(argv, stdout, stderr, pass_fds, gid, parent, err_w)
        except OSError as e:
            os.write(err_w, f"{e.errno or 0}:{e.strerror or e}".encode()[:512])
        except BaseException as e:  # a bug: still no return into the keeper's code in this child
            os.write(err_w, f"0:{type(e).__name__}: {e}".encode()[:512])
        os._exit(127)
    os.close(err_w)
    try:
        report = b""
        while chunk := os.read(err_r, 512):
            report += chunk
    finally:
        os.close(err_r)
    if not report:
        return Helper(pid)
    os.waitpid(pid, 0)
    number, _, message = report.decode(errors="replace").partition(":")
    raise OSError(int(number) if number.isdigit() else 0, f"{message} ({argv[0]})")


def _become_helper(
    argv: list[str],
    stdout: int | None,
    stderr: int | None,
    pass_fds: tuple[int, ...] | list[int],
    gid: int | None,
    parent: int,
    err_w: int,
) -> None:
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    for target, source in ((1, stdout), (2, stderr)):
        if source is not None:
            os.dup2(source, target)
    keep = {0, 1, 2, err_w, *pass_fds}
    for fd in pass_fds:
        os.set_inheritable(fd, True)
    low = 3
    for fd in sorted(keep | {1 << 20}):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    for sig in _RESET_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    if gid is not None:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the keeper died before prctl: no helper without it
        os._exit(1)
    os.execvp(argv[0], argv)
