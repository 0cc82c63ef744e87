"""Start one user process inside the box root, confined (stdlib only).

The agent forks; the child joins the box root (``chroot``), takes the requested user, keeps
only the box's capabilities (box root; other users none), sets no_new_privs, loads the
seccomp filter, closes every inherited fd and ``execve``s. Failures before ``execve`` travel
back on a close-on-exec pipe as ``"<errno>:<message>"`` so the agent can report a typed error
instead of an exit code.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import stat
import struct
import termios
import time
import warnings  # noqa: F401 - os.get_exec_path (execvpe, PATH search) imports it after the chroot hid the stdlib
from collections.abc import Callable

from . import linux, rlimit, seccomp
from .protocol import CWD_FAILURE

TYPE_CHECKING = False  # not from typing (~2 ms to import into every box's agent)
if TYPE_CHECKING:
    from typing import NoReturn

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TIOCGPTPEER = 0x5441
TIOCSPTLCK = 0x40045431
TIOCSCTTY = 0x540E
START_TIMEOUT = 10.0  # fork to execve; a child stuck longer is killed and reported
DB_LIMIT = 16 << 20  # bytes read at most from the box's /etc/passwd and /etc/group
BOX_OOM_SCORE_ADJ = 1000  # box processes go first when the box (or the host) runs out of memory
BUILTIN_CAPS = 1 << linux.CAP_DAC_OVERRIDE | 1 << linux.CAP_DAC_READ_SEARCH


class ExecSpec:
    """What to run, from an ``exec`` request body. (A plain class: ``dataclasses`` would import
    ``inspect`` and ``ast`` into every box's agent, ~7 ms of its start.)"""

    __slots__ = ("argv", "builtin", "builtin_args", "cols", "cwd", "env", "log_path", "rlimits", "rows", "tty", "user")

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
        tty: bool = False,
        rows: int = 24,
        cols: int = 80,
        builtin: str | None = None,
        builtin_args: dict[str, object] | None = None,
        log_path: str | None = None,
        rlimits: dict[str, int] | None = None,
    ) -> None:
        self.argv = argv
        self.env = {} if env is None else env
        self.cwd, self.user, self.tty, self.rows, self.cols = cwd, user, tty, rows, cols
        self.builtin = builtin
        self.builtin_args = {} if builtin_args is None else builtin_args
        self.log_path = log_path
        self.rlimits = {} if rlimits is None else rlimits
        """Resource limits set right before ``execve`` (``agent/rlimit.py``)."""

    def __repr__(self) -> str:
        return f"ExecSpec(argv={self.argv!r}, builtin={self.builtin!r}, user={self.user!r}, tty={self.tty!r})"

    @classmethod
    def from_request(cls, body: dict[str, object]) -> ExecSpec:
        argv = body.get("argv")
        builtin = body.get("builtin")
        if builtin is None and (not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv)):
            raise ValueError("argv must be a non-empty list of strings")
        env = body.get("env") or {}
        if not isinstance(env, dict):
            raise ValueError("env must be an object")
        return cls(
            argv=list(argv or []),  # type: ignore[call-overload]
            env={str(k): str(v) for k, v in env.items()},
            cwd=body.get("cwd") or None,  # type: ignore[arg-type]
            user=body.get("user") or None,  # type: ignore[arg-type]
            tty=bool(body.get("tty")),
            rows=int(body.get("rows") or 24),  # type: ignore[call-overload]
            cols=int(body.get("cols") or 80),  # type: ignore[call-overload]
            builtin=builtin,  # type: ignore[arg-type]
            builtin_args=dict(body.get("builtin_args") or {}),  # type: ignore[call-overload]
            log_path=None,
            rlimits=rlimit.parse(body.get("rlimits")),
        )


class Confinement:
    """How the agent confines user processes; computed once at agent start."""

    __slots__ = ("cap_last", "cap_mask", "drop_caps", "root", "seccomp_program")

    def __init__(
        self,
        root: str,
        seccomp_program: bytes | None,
        cap_last: int,
        drop_caps: bool = True,
        cap_mask: int = linux.DEFAULT_BOX_CAPS,
    ) -> None:
        self.root, self.seccomp_program, self.cap_last, self.drop_caps = root, seccomp_program, cap_last, drop_caps
        self.cap_mask = cap_mask
        """Box root's capabilities (bit mask): its bounding, permitted and effective sets after
        ``execve``; other users get the same bounding set and nothing else, as in Docker."""

    def capabilities(self, uid: int) -> tuple[int, int]:
        """(bounding, permitted) for a command run as ``uid``."""
        return self.cap_mask, self.cap_mask if uid == 0 else 0


class Spawned:
    """A started process and the parent's ends of its standard streams."""

    __slots__ = ("master", "pid", "stderr", "stdin", "stdout")

    def __init__(self, pid: int, stdin: int | None, stdout: int | None, stderr: int | None, master: int | None) -> None:
        self.pid = pid
        self.stdin = stdin  # write end (pipe) or pty master
        self.stdout, self.stderr = stdout, stderr
        self.master = master  # pty master when tty


def open_pty(root: str, rows: int, cols: int) -> int:
    """A pty master from the box's devpts (``<root>/dev/pts/ptmx``), unlocked and sized."""
    path = os.path.join(root, "dev/pts/ptmx")
    if not os.path.exists(path):
        path = "/dev/ptmx"
    master = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    set_winsize(master, rows, cols)
    return master


def set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


Ends = tuple[int | None, int | None, int | None]


def prepare_stdio(spec: ExecSpec, root: str) -> tuple[tuple[int, ...], Ends, int | None]:
    """The child's stdio fds, the parent's ends (stdin, stdout, stderr) and the pty master.
    With a terminal the child gets one fd: the pty's slave side."""
    if spec.tty:
        master = open_pty(root, spec.rows, spec.cols)
        slave = int(fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC))
        return (slave,), (master, master, None), master
    if spec.log_path:  # detached: no stdin; stdout and stderr share one pipe the agent copies to the log
        in_r, in_w = os.pipe()
        os.close(in_w)
        out_r, out_w = os.pipe()
        return (in_r, out_w, out_w), (None, out_r, None), None
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    return (in_r, out_w, err_w), (in_w, out_r, err_r), None


def finish_parent(child_fds: tuple[int, ...], parent: Ends) -> None:
    """After the child started: drop its ends, make ours non-blocking."""
    for fd in set(child_fds):
        os.close(fd)
    for end in {x for x in parent if x is not None}:
        os.set_blocking(end, False)


def close_all(fds: tuple[int | None, ...]) -> None:
    for fd in {x for x in fds if x is not None}:
        os.close(fd)


def spawn(spec: ExecSpec, conf: Confinement, builtin: Callable[[ExecSpec], int] | None) -> Spawned:
    """Fork and start ``spec``; raise OSError (with the child's message) if it cannot start."""
    child_fds, parent, master = prepare_stdio(spec, conf.root)
    err_r_pipe, err_w_pipe = os.pipe()  # both close-on-exec
    pid = os.fork()
    if pid == 0:  # child: never returns
        try:
            attach_stdio(child_fds, master is not None)
            _confine_and_exec(spec, conf, err_w_pipe, builtin)
        except BaseException as e:
            fail_child(err_w_pipe, e)
    os.close(err_w_pipe)
    try:
        await_exec(err_r_pipe, pid)
    except OSError:
        close_all((*child_fds, *parent))
        raise
    finish_parent(child_fds, parent)
    return Spawned(pid=pid, stdin=parent[0], stdout=parent[1], stderr=parent[2], master=master)


def attach_stdio(child_fds: tuple[int, ...] | list[int], tty: bool) -> None:
    """In the child: a session of its own, and its stdio (with a terminal, the pty's slave
    side as stdin, stdout, stderr and controlling terminal)."""
    os.setsid()
    if tty:
        fcntl.ioctl(child_fds[0], TIOCSCTTY, 0)
        child_fds = [child_fds[0]] * 3
    for target, fd in enumerate(child_fds):
        os.dup2(fd, target)


def fail_child(err_fd: int, e: BaseException) -> NoReturn:
    """In the child, before ``execve``: send ``e`` to the parent as "<errno>:<message>", exit."""
    code = e.errno if isinstance(e, OSError) and e.errno else 0
    text = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    try:
        os.write(err_fd, f"{code}:{text}".encode(errors="replace")[:4000])
    finally:
        os._exit(127)


def await_exec(err_fd: int, pid: int) -> None:
    """In the parent: return once the child ``execve``d (its close-on-exec end of the error
    pipe closed); raise its error as OSError after reaping it; kill a child stuck longer than
    START_TIMEOUT (the agent must not wait forever). Closes ``err_fd``."""
    failure = b""
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([err_fd], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                failure = f"{errno.ETIMEDOUT}:the process did not start within {START_TIMEOUT:g}s".encode()
                break
            chunk = os.read(err_fd, 4096)
            if not chunk:
                break
            failure += chunk
    finally:
        os.close(err_fd)
    if failure:
        os.waitpid(pid, 0)
        errno_text, _, message = failure.decode(errors="replace").partition(":")
        raise OSError(int(errno_text or 0), message)


def _confine_and_exec(
    spec: ExecSpec, conf: Confinement, err_fd: int, builtin: Callable[[ExecSpec], int] | None
) -> None:
    raise_oom_score()
    if builtin is not None:
        import tarfile  # noqa: F401 - builtins need it; import it before the box root hides the stdlib
    if conf.root != "/":
        os.chroot(conf.root)
    os.chdir("/")
    uid, gid, groups, home = resolve_user(spec.user)
    os.setgroups(groups)
    os.setresgid(gid, gid, gid)
    # Builtins (copy_in/copy_out) run our own code as box root and may read and write any box
    # file, like ``docker cp``: they keep the file-permission overrides, which the box's user
    # namespace limits to the box's own files. Commands get the box's set (root only).
    if builtin is not None:
        keep = BUILTIN_CAPS if uid == 0 else 0
        bounding, permitted = keep, keep
    else:
        bounding, permitted = conf.capabilities(uid)
    if conf.drop_caps:
        linux.limit_bounding(conf.cap_last, bounding)  # needs CAP_SETPCAP: before the uid changes
    os.setresuid(uid, uid, uid)
    if conf.drop_caps:  # root's execve gives it its bounding set: permitted must hold it (no_new_privs)
        linux.set_capabilities(-1, bounding, permitted)
    env = exec_env(spec, home)
    enter_cwd(spec.cwd or "/")
    rlimit.apply(spec.rlimits)
    linux.set_no_new_privs()
    if conf.seccomp_program:
        seccomp.install(conf.seccomp_program)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    os.closerange(3, err_fd)
    os.closerange(err_fd + 1, 65536)
    if builtin is not None:
        os.close(err_fd)
        os._exit(_run_builtin(builtin, spec))
    try:
        os.execvpe(spec.argv[0], spec.argv, env)
    except OSError as e:
        raise exec_error(e, spec.argv[0]) from None


def exec_env(spec: ExecSpec, home: str) -> dict[str, str]:
    """The command's environment: the request's, plus PATH, HOME (and TERM with a terminal)."""
    env = dict(spec.env)
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOME", home)
    if spec.tty:
        env.setdefault("TERM", "xterm")
    return env


def enter_cwd(cwd: str) -> None:
    try:
        os.chdir(cwd)
    except OSError as e:
        raise cwd_error(e, cwd) from None


def cwd_error(e: OSError, cwd: str) -> OSError:
    return OSError(e.errno, f"{CWD_FAILURE}{cwd!r}: {e.strerror}")


def exec_error(e: OSError, program: str) -> OSError:
    """``execve`` failed: the message a user understands."""
    what = "executable file not found" if e.errno == 2 else e.strerror
    return OSError(e.errno, f"{program}: {what}")


def raise_oom_score() -> None:
    """Make the process the OOM killer's first choice, before the agent: the agent is the box
    (killing it ends every process), and lowering the agent's score needs CAP_SYS_RESOURCE on
    the host, which raising ours does not.

    /proc/self of a non-dumpable process belongs to host root, so the child is dumpable for
    this one write; it still holds every capability here, which keeps unprivileged box
    processes from attaching to it meanwhile (their capabilities are not a superset)."""
    try:
        linux.prctl(linux.PR_SET_DUMPABLE, 1)
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(str(BOX_OOM_SCORE_ADJ))
        finally:
            linux.prctl(linux.PR_SET_DUMPABLE, 0)
    except OSError:
        pass


def _run_builtin(builtin: Callable[[ExecSpec], int], spec: ExecSpec) -> int:
    """Run a builtin in the confined child; a failure becomes a message on its stderr."""
    try:
        return builtin(spec)
    except BaseException as e:  # the error pipe is closed already: stderr is the only way out
        text = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        where = f": {e.filename}" if isinstance(e, OSError) and e.filename else ""
        try:
            os.write(2, f"{spec.builtin}: {text}{where}\n".encode(errors="replace"))
        except OSError:
            pass
        return 1


def resolve_user(user: str | None) -> tuple[int, int, list[int], str]:
    """(uid, gid, supplementary groups, home) for ``name|uid[:group|gid]`` from the box's files."""
    if not user:
        user = "0"
    name, _, group = user.partition(":")
    passwd = _read_db("/etc/passwd")
    entry = next((p for p in passwd if p[0] == name), None)
    if entry is None and name.isdigit():
        entry = next((p for p in passwd if p[2] == name), None)
    if entry is not None:
        uid, gid, home, uname = int(entry[2]), int(entry[3]), entry[5] or "/", entry[0]
    elif name.isdigit():
        uid, gid, home, uname = int(name), int(name), "/", ""
    else:
        raise OSError(22, f"unable to find user {name}: no matching entries in passwd file")
    groups_db = _read_db("/etc/group")
    if group:
        g = next((e for e in groups_db if e[0] == group or (group.isdigit() and e[2] == group)), None)
        if g is not None:
            gid = int(g[2])
        elif group.isdigit():
            gid = int(group)
        else:
            raise OSError(22, f"unable to find group {group}: no matching entries in group file")
    supplementary = [gid]
    if uname:
        supplementary += [int(e[2]) for e in groups_db if len(e) > 3 and uname in e[3].split(",")]
    return uid, gid, sorted(set(supplementary)), home


def _read_db(path: str) -> list[list[str]]:
    """The lines of a passwd/group file, split on ':'. The box owns these files: only a regular
    file is read, and at most DB_LIMIT bytes (a FIFO there would block every later exec)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return []
        data = b""
        while len(data) < DB_LIMIT and (chunk := os.read(fd, 1 << 16)):
            data += chunk
    except OSError:
        return []
    finally:
        os.close(fd)
    text = data[:DB_LIMIT].decode("utf-8", errors="replace")
    return [line.split(":") for line in text.split("\n") if line.count(":") >= 2]
