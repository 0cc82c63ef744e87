"""A pre-confined fork server for box processes (stdlib only).

Forking the agent for every command costs its page tables and copy-on-write faults, which
dominate an exec round trip under TCG (~15 ms of ~26 ms). So the agent forks this *spawner*
once, after the box root is mounted (a namespace box's agent retires it when unused for a while
and forks a new one for the next command: ``Agent.spawner_idle``). The spawner confines itself the way every box process
must be confined: box root (``chroot``), OOM score 1000, the box's capabilities as bounding set
(so ``execve`` gives root those and no others), no_new_privs, the seccomp filter. Then each
command only needs ``os.posix_spawn`` (glibc: ``clone(CLONE_VM|CLONE_VFORK)`` + ``execve``, no
Python code in the child and none of ``subprocess``'s, which cost ~1/4 of a VM exec under TCG),
or a plain fork of this process when a user switch, a terminal or rlimits need code to run
before ``execve``. Every fd of the spawner is close-on-exec (Python's default, and ``receive``
makes the received ones so): a spawned command gets only its three stdio fds.

Agent and spawner talk over a ``SOCK_SEQPACKET`` pair, one JSON message per packet, stdio
fds attached with ``SCM_RIGHTS``:

* agent → spawner: ``{"argv", "env", "cwd", "user", "tty"}`` + fds (stdin, stdout, stderr; or
  the terminal's slave side when ``tty``);
* spawner → agent: ``{"pid"}`` or ``{"errno", "error"}``, then later ``{"exit", "code"}`` for
  every process it started (``code`` as in ``Popen.returncode``: ``-N`` for signal N).

If the spawner dies, its processes are re-parented to the agent (PID 1 or a subreaper), which
reaps them itself and spawns the old way.
"""

from __future__ import annotations

import array
import errno
import os
import selectors
import signal
import socket

from . import leanjson, linux, rlimit, seccomp
from .spawn import (
    Confinement,
    ExecSpec,
    attach_stdio,
    await_exec,
    enter_cwd,
    exec_env,
    exec_error,
    fail_child,
    raise_oom_score,
    resolve_user,
)

TYPE_CHECKING = False  # not from typing (~2 ms to import into every box's agent)
if TYPE_CHECKING:
    from typing import Any

MAX_MESSAGE = 1 << 20  # argv + env of one request
MAX_REPLY = 64 << 10
"""Bytes read for one reply. A receive buffer is allocated per call, and one above glibc's mmap
threshold (128 KiB) is mapped and unmapped each time: ~0.4 ms per message in a VM under TCG,
where a 64 KiB one is not. Requests are sized first (:func:`next_size`) and read to length."""
MAX_ERROR = 4096  # characters of an error message in a reply
REPLY_TIMEOUT = 10.0  # a spawner that does not answer is broken: the agent stops using it
CAP_SETGID, CAP_SETUID = 6, 7
KEEP = 1 << linux.CAP_DAC_OVERRIDE | 1 << linux.CAP_DAC_READ_SEARCH | 1 << CAP_SETGID | 1 << CAP_SETUID
USER_CACHE = 64  # resolved users kept (request strings from the host: bounded)
RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP)


def send(sock: socket.socket, body: dict[str, Any], fds: list[int] | tuple[int, ...] = ()) -> None:
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sock.sendmsg([leanjson.dumps(body).encode()], ancillary)


def next_size(sock: socket.socket) -> int:
    """Length of the next message, left unread (0 at EOF)."""
    return sock.recv_into(bytearray(1), 1, socket.MSG_PEEK | socket.MSG_TRUNC)


def receive(sock: socket.socket, size: int = MAX_REPLY) -> tuple[dict[str, Any] | None, list[int]]:
    """One message of at most ``size`` bytes and its fds (close-on-exec from the start);
    ``(None, [])`` at EOF. A longer message is an error: ConnectionError."""
    fds = array.array("i")
    data, ancdata, flags, _ = sock.recvmsg(max(size, 1), socket.CMSG_SPACE(8 * fds.itemsize), socket.MSG_CMSG_CLOEXEC)
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    received = list(fds)
    if not data or flags & socket.MSG_TRUNC:
        for fd in received:
            os.close(fd)
        if data:
            raise ConnectionError(f"a message longer than {size} bytes")
        return None, []
    return leanjson.loads(data), received


class RequestTooLarge(Exception):
    """A request longer than one message of the agent-spawner socket can hold (its send buffer,
    ~208 KiB by default): nothing was sent, the spawner is intact; the agent starts that command
    by itself (the kernel's own limit on arguments and environment, ~2 MiB, then applies)."""


class SpawnerClient:
    """The agent's handle on its spawner."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock, self.pid = sock, pid
        self.exits: list[tuple[int, int]] = []  # (pid, returncode) read while awaiting a reply

    def fileno(self) -> int:
        return self.sock.fileno()

    def start(self, spec: ExecSpec, fds: list[int]) -> int:
        """Start ``spec`` with ``fds`` as its stdio; its pid. OSError when it cannot start,
        ConnectionError when the spawner is gone, RequestTooLarge when ``spec`` does not fit in
        one message (the caller then spawns by itself)."""
        body: dict[str, Any] = {"argv": spec.argv, "env": spec.env, "cwd": spec.cwd, "user": spec.user, "tty": spec.tty}
        if spec.rlimits:
            body["rlimits"] = spec.rlimits
        try:
            send(self.sock, body, fds)
        except OSError as e:
            if e.errno == errno.EMSGSIZE:
                raise RequestTooLarge(str(e)) from None
            raise
        self.sock.settimeout(REPLY_TIMEOUT)
        try:
            while True:
                reply, extra = receive(self.sock)
                for fd in extra:
                    os.close(fd)
                if reply is None:
                    raise ConnectionError("the spawner exited")
                if "exit" in reply:
                    self.exits.append((int(reply["exit"]), int(reply["code"])))
                    continue
                if "pid" in reply:
                    return int(reply["pid"])
                raise OSError(int(reply.get("errno") or 0), str(reply.get("error", "cannot start")))
        except TimeoutError:
            raise ConnectionError("the spawner did not answer") from None
        finally:
            self.sock.settimeout(0)

    def read_exits(self) -> list[tuple[int, int]] | None:
        """Exit notifications read while awaiting a reply, and the next message; None once the
        spawner is gone. One message per call: the agent's selector calls again while more wait
        (no failing read, an exception under TCG, after each exit)."""
        out, self.exits = self.exits, []
        try:
            msg, extra = receive(self.sock)
        except BlockingIOError:
            return out
        except OSError:
            msg, extra = None, []
        for fd in extra:
            os.close(fd)
        if msg is None:
            return out if out else None
        if "exit" in msg:
            out.append((int(msg["exit"]), int(msg["code"])))
        return out

    def close(self) -> None:
        self.sock.close()


def start_spawner(conf: Confinement, go: int | None = None, netns: int | None = None) -> SpawnerClient:
    """Fork the spawner from the agent. Without ``go``, call once the box root is ready.

    With ``go`` (a pipe's read end; the caller closes its copy) the spawner is forked before
    the box is known: it sheds what it inherited at once, then reads the box's settings from
    the pipe until EOF (none: the box failed, it exits) and enters the root: ``{"cap_mask":
    int | None, "isolate": bool}``, where ``isolate`` joins ``netns`` (a box without network).
    The VM engine forks it so in its template, whose snapshot then holds it forked and waiting:
    a restored box's first command does not wait for the fork (cold guest code under TCG)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            ours.close()
            _serve(theirs, conf, go, netns)
            code = 0
        finally:
            os._exit(code)
    theirs.close()
    ours.setblocking(False)
    return SpawnerClient(ours, pid)


def _shed_inherited(keep_fds: set[int]) -> None:
    """Close every fd but ``keep_fds``, reset signal dispositions and mask, and become the OOM
    killer's first choice: nothing of this needs the box root."""
    signal.set_wakeup_fd(-1)
    for fd in range(3, max(keep_fds) + 1):
        if fd not in keep_fds:
            try:
                os.close(fd)
            except OSError:
                pass
    os.closerange(max(keep_fds) + 1, 65536)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    raise_oom_score()


def _await_box(go: int, conf: Confinement, netns: int | None) -> None:
    """Read the box's settings (see :func:`start_spawner`) and apply what is not the root's."""
    data = bytearray()
    while chunk := os.read(go, 4096):
        data += chunk
    os.close(go)
    if not data:
        os._exit(1)
    box = leanjson.loads(data)
    if isinstance(box.get("cap_mask"), int):  # None: the default set
        conf.cap_mask = int(box["cap_mask"])
    if netns is not None:
        if box.get("isolate"):
            linux.setns(netns, linux.CLONE_NEWNET)
        os.close(netns)


def _enter_root(conf: Confinement) -> None:
    """Enter the box root and take on the box's confinement (capabilities, no_new_privs, seccomp)."""
    if conf.root != "/":
        os.chroot(conf.root)
    os.chdir("/")
    os.setgroups([0])
    if conf.drop_caps:  # bounding: the box's set; permitted: it plus what switching users needs
        linux.set_capabilities(conf.cap_last, conf.cap_mask, conf.cap_mask | KEEP)
    linux.prctl(linux.PR_SET_DUMPABLE, 0)
    linux.set_no_new_privs()
    if conf.seccomp_program:
        seccomp.install(conf.seccomp_program)


def _serve(sock: socket.socket, conf: Confinement, go: int | None, netns: int | None) -> None:
    _shed_inherited({0, 1, 2, sock.fileno()} | {fd for fd in (go, netns) if fd is not None})
    if go is not None:
        _await_box(go, conf, netns)
    _enter_root(conf)
    try:  # the box's user files, read now (while the host connects) rather than for the first command
        _users.resolve(None)
    except Exception:  # a malformed file: the command that needs it reports it
        pass
    children: dict[int, int] = {}  # pidfd -> pid
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            if key.fileobj is sock:
                msg, fds = receive(sock, min(next_size(sock), MAX_MESSAGE))
                if msg is None:
                    return  # the agent is gone
                try:
                    pid = _start(msg, fds, conf)
                except OSError as e:
                    send(sock, {"errno": e.errno or 0, "error": (e.strerror or str(e))[:MAX_ERROR]})
                    continue
                finally:
                    for fd in fds:
                        os.close(fd)
                pidfd = os.pidfd_open(pid)
                children[pidfd] = pid
                sel.register(pidfd, selectors.EVENT_READ)
                send(sock, {"pid": pid})
            else:
                pidfd = int(key.fd)
                sel.unregister(pidfd)
                os.close(pidfd)
                pid = children.pop(pidfd)
                _, status = os.waitpid(pid, 0)
                send(sock, {"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def _start(msg: dict[str, Any], fds: list[int], conf: Confinement) -> int:
    spec = ExecSpec.from_request(msg)
    uid, gid, groups, home = _users.resolve(spec.user)
    env = exec_env(spec, home)
    cwd = spec.cwd or "/"
    if not spec.tty and (uid, gid, groups) == (0, 0, [0]) and len(fds) == 3 and min(fds) > 2 and not spec.rlimits:
        return _posix_spawn(spec, env, cwd, fds)
    return _fork_exec(spec, env, cwd, fds, (uid, gid, groups), conf.capabilities(uid)[1])


class _UserCache:
    """``resolve_user`` answers while the box's /etc/passwd and /etc/group are unchanged: two
    ``stat`` calls per exec instead of reading and parsing both files (the box owns them and may
    change them at any time: any change of inode, size or times reads them again)."""

    def __init__(self) -> None:
        self.stamp: tuple[object, ...] | None = None
        self.users: dict[str | None, tuple[int, int, list[int], str]] = {}

    def resolve(self, user: str | None) -> tuple[int, int, list[int], str]:
        stamp = (_stamp("/etc/passwd"), _stamp("/etc/group"))
        if stamp != self.stamp or len(self.users) >= USER_CACHE:
            self.stamp, self.users = stamp, {}
        hit = self.users.get(user)
        if hit is None:
            hit = self.users[user] = resolve_user(user)
        uid, gid, groups, home = hit
        return uid, gid, list(groups), home


def _stamp(path: str) -> tuple[int, ...] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


_users = _UserCache()


def _posix_spawn(spec: ExecSpec, env: dict[str, str], cwd: str, fds: list[int]) -> int:
    """The fast path: ``posix_spawn`` (vfork-like, no code of ours in the child) in a session of
    its own, from ``cwd`` (the spawner is single-threaded: it changes its own directory for the
    call and goes back to ``/``). A name without a slash is looked up along the command's PATH
    by glibc's ``posix_spawnp``, as ``execvp`` does (a directory or a file that is not
    executable is skipped; EACCES if only such were found), which reads PATH from the
    spawner's own environment: set to the command's first. (A lookup in Python, a ``stat``
    per PATH entry, cost ~0.35 ms per exec in a VM under TCG.)"""
    if cwd != "/":
        enter_cwd(cwd)
    try:
        actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(fds)]
        name = spec.argv[0]
        if "/" in name:
            return os.posix_spawn(name, spec.argv, env, file_actions=actions, setsid=True, setsigdef=RESET_SIGNALS)
        path = env.get("PATH", "")
        if os.environ.get("PATH") != path:
            os.environ["PATH"] = path
        return os.posix_spawnp(name, spec.argv, env, file_actions=actions, setsid=True, setsigdef=RESET_SIGNALS)
    except OSError as e:
        raise exec_error(e, spec.argv[0]) from None
    finally:
        if cwd != "/":
            os.chdir("/")


def _fork_exec(
    spec: ExecSpec, env: dict[str, str], cwd: str, fds: list[int], ids: tuple[int, int, list[int]], permitted: int
) -> int:
    """A terminal or another user: fork, prepare, execve; errors come back on a pipe.
    ``permitted``: the capabilities the user keeps (box root's set; none for others)."""
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            attach_stdio(fds, spec.tty)
            uid, gid, groups = ids
            os.setgroups(groups)
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            linux.set_capabilities(-1, 0, permitted)  # the bounding set is the box's already
            enter_cwd(cwd)
            rlimit.apply(spec.rlimits)  # in the child only: the spawner itself stays unlimited
            os.closerange(3, err_w)
            os.closerange(err_w + 1, 65536)
            try:
                os.execvpe(spec.argv[0], spec.argv, env)
            except OSError as e:
                raise exec_error(e, spec.argv[0]) from None
        except BaseException as e:
            fail_child(err_w, e)
    os.close(err_w)
    await_exec(err_r, pid)
    return pid
