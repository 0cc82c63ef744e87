"""Per-box host supervisor of a VM: ``python -m boxlite.engines.vm.shim CONFIG.json``.

Starts QEMU (which dies with the shim: ``PR_SET_PDEATHSIG``) and any virtiofsd, boots or
restores the VM over QMP, hands the guest its settings and waits for the agent's answer. Then
it binds the box's agent socket and ``execve``s the small relay process (``relayd.py``: same
pid, QEMU stays its child), which relays clients, watches the lifeline and stops the VM. The
first process forks and exits at once, so the shim is nobody's child and leaves no zombie.
Status lines on ``status_fd``: ``pid <shim pid>``, then ``ready <json>``, ``template <path>``
or ``error <message>``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ...agent import leanjson
from ...agent import protocol as p
from ...filenames import BOOT_JSON_NAME, QEMU_PID_NAME, SHIM_LOG_NAME, SHIM_PID_NAME
from ...procfs import process_start_time  # not ..base: it imports asyncio, delaying QEMU
from . import landlock, vmcontrol
from .console import ConsoleLog
from .qemu import GUEST_NET, VmConfig, qemu_argv, safe_hostname, virtiofs_socket
from .vmcontrol import CONTROL_SOCKET_NAME, UNTHROTTLED

TYPE_CHECKING = False  # not imported from typing: this process is on the path of every VM start
if TYPE_CHECKING:
    from typing import Any

IGNORE_SHARED: dict[str, object] = {"capabilities": [{"capability": "x-ignore-shared", "state": True}]}
"""Migration capability of a VM whose RAM is a file: its RAM stays in the file."""
VIRTIOFSD = "/usr/lib/qemu/virtiofsd"  # Debian's qemu-system-common
QMP_GREETING_TIMEOUT = 60.0
"""Longest wait for QEMU's monitor to greet (its start on a loaded host)."""
INCOMING_FD_NAME = "boxlite-incoming"  # the saved state QEMU loads (QMP getfd)
PKG_DIR = str(Path(__file__).resolve().parents[2])  # the boxlite package, for the relay's bootstrap
PR_SET_PDEATHSIG = 1
PR_SET_THP_DISABLE = 41
PR_CAPBSET_DROP = 24
WAITING = b"boxlite-vminit-waiting\n"  # vminit's line before it reads the box settings
# virtiofsd runs as root (it must act as any guest user on the host files) with its namespace
# sandbox and its built-in seccomp filter; of its capabilities it keeps neither MKNOD (a guest
# root must not make device nodes in a host directory), nor SETFCAP or FSETID; no xattrs, so
# no file capabilities either; killpriv_v2 (its default) clears setuid bits on writes.
VIRTIOFSD_OPTS = ("-o", "cache=auto", "-o", "no_xattr", "-o", "modcaps=-mknod:-setfcap:-fsetid")
_console: tuple[ConsoleLog, int] | None = None  # the console log and the pipe QEMU writes to


def drain_console() -> None:
    """Copy what QEMU wrote to the console so far into console.log."""
    if _console is not None:
        _console[0].pump(_console[1])


def _report(fd: int | None, word: str, arg: str = "") -> None:
    if fd is None:
        return
    drain_console()  # an error message quotes the console's last lines
    try:
        os.write(fd, p.status_line(word, arg))
    except OSError:
        pass


def _die_with_parent(parent: int) -> None:
    """preexec_fn of QEMU and virtiofsd: SIGKILL when the shim dies (and check it did not
    already). ``PR_SET_PDEATHSIG`` fires when the forking *thread* ends: both are spawned by
    the shim's only thread, the one that later ``execve``s the relay and so lives as long as
    the process. Thus they die
    with the shim or the relay however it ends, and the relay (which watches the lifeline) is
    the one process tied to the owner. No transparent huge pages: a guest touching 4 KiB of a
    2 MiB region would cost 2 MiB of host memory (guest RAM and the TCG translation cache both)."""
    libc = ctypes.CDLL(None)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    libc.prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _qemu_preexec(parent: int, net_gid: int | None) -> None:
    """preexec_fn of QEMU. A box with network: QEMU (still uid 0, for its files) joins the host
    guard's group, whose new flows to the host's own addresses the host refuses: slirp opens
    its sockets in QEMU and would otherwise reach the host's loopback through 10.0.2.2."""
    if net_gid is not None:
        from ..net import hostguard  # imported already (start_qemu): no import between fork and exec

        hostguard.enter_helper_group(net_gid)
    _die_with_parent(parent)


def confine_relay(*writable: str) -> None:
    """The relay parses what the guest sends: it keeps no capability (it signals QEMU, of its own
    uid, and writes root's files in the box dir) and, with Landlock, writes nowhere else."""
    rights = landlock.READ_WRITE | landlock.MAKE_REG | landlock.REMOVE_FILE  # logs rotate by rename
    rules = landlock.ruleset([("/", landlock.READ_EXEC), *((path, rights) for path in writable)])
    libc = ctypes.CDLL(None)
    cap = 0
    while libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:  # ends past the last capability
        cap += 1
    # and none held now (not only after the relay's execve): version 3 header, zeroed sets
    header, data = (ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)()
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset")
    libc.prctl(landlock.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # execve grants no capability back
    if rules is not None:
        landlock.restrict_self(rules)
        os.close(rules)


def start_virtiofsd(cfg: VmConfig, run_dir: Path, log_fd: int) -> list[subprocess.Popen[bytes]]:
    """One virtiofsd per volume, serving its host directory on a vhost-user socket that QEMU
    connects to. Each exits with its VM (and dies with the shim)."""
    procs = []
    me = os.getpid()
    for i, (host_dir, _, _, _) in enumerate(cfg.volumes):
        sock = run_dir / virtiofs_socket(i)
        sock.unlink(missing_ok=True)
        argv = [VIRTIOFSD, f"--socket-path={virtiofs_socket(i)}", "-o", f"source={host_dir}", *VIRTIOFSD_OPTS]
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            cwd=run_dir,
            preexec_fn=lambda: _die_with_parent(me),
        )
        procs.append(proc)
    deadline = time.monotonic() + 30  # a loaded 2-core host took over 10 s once
    for i, proc in enumerate(procs):
        while not (run_dir / virtiofs_socket(i)).exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise OSError(f"virtiofsd for {cfg.volumes[i][0]} did not start (see shim.log)")
            time.sleep(0.005)
    return procs


def start_dnsproxy(cfg: VmConfig, log_fd: int) -> subprocess.Popen[bytes] | None:
    """An allow-listed box's DNS proxy (..net.dnsproxy), started before QEMU (its rules must be
    in place before slirp opens a socket) and dying with the shim, then the relay."""
    return _start_proxy(cfg.dnsproxy, "DNS proxy", log_fd, None)


def start_secretproxy(cfg: VmConfig, log_fd: int) -> subprocess.Popen[bytes] | None:
    """A box's secret proxy (..net.secretproxy), after the DNS proxy (which flushes the box's
    chain) and before QEMU, in the box's helper group: its own connections pass the box's rules."""
    return _start_proxy(cfg.secretproxy, "secret proxy", log_fd, cfg.net_gid)


def _start_proxy(argv: list[str] | None, what: str, log_fd: int, gid: int | None) -> subprocess.Popen[bytes] | None:
    if not argv:
        return None
    me = os.getpid()

    def preexec() -> None:
        if gid is not None:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
        _die_with_parent(me)

    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log_fd, preexec_fn=preexec)
    assert proc.stdout is not None
    out, text, deadline = proc.stdout.fileno(), b"", time.monotonic() + 30
    while b"\n" not in text and time.monotonic() < deadline:
        if not select.select([out], [], [], max(0.0, deadline - time.monotonic()))[0]:
            break
        chunk = os.read(out, 64)
        if not chunk:
            break
        text += chunk
    proc.stdout.close()
    if not text.startswith(b"ready "):
        proc.kill()
        raise OSError(f"the box's {what} did not start (see shim.log)")
    return proc


def start_qemu(
    cfg: VmConfig, run_dir: Path, log_fd: int, writable_dirs: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[bytes], socket.socket, socket.socket]:
    """Spawn QEMU with connected socketpairs for the agent stream and QMP, and its console
    into a pipe drained into the capped console log. QEMU opens only its own files
    (:mod:`.landlock`; ``writable_dirs``: where a template's state is saved)."""
    global _console
    agent_host, agent_guest = socket.socketpair()
    qmp_host, qmp_guest = socket.socketpair()
    console_r, console_w = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(console_r, False)
    _console = (ConsoleLog(cfg.console), console_r)
    argv = qemu_argv(cfg, agent_guest.fileno(), qmp_guest.fileno(), console_w)
    me = os.getpid()
    net_gid = None
    if cfg.network or cfg.ports:  # (hashlib, ipaddress, subprocess: not for a box without network)
        from ..net import hostguard

        net_gid = cfg.net_gid or hostguard.helper_gid()
    rules = landlock.ruleset(landlock.qemu_rules(cfg, str(run_dir), writable_dirs))

    def preexec() -> None:
        _qemu_preexec(me, net_gid)
        if rules is not None:
            landlock.restrict_self(rules)

    proc = subprocess.Popen(
        argv,
        pass_fds=(agent_guest.fileno(), qmp_guest.fileno(), console_w),
        stdin=subprocess.DEVNULL,
        stdout=log_fd,
        stderr=log_fd,
        cwd=run_dir,
        preexec_fn=preexec,
    )
    if rules is not None:
        os.close(rules)
    agent_guest.close()
    qmp_guest.close()
    os.close(console_w)
    return proc, agent_host, qmp_host


class Handoff:
    """What the relay process takes over once the guest has its settings: it sends ``hello`` and
    reports ``ready <boot_json>`` when the agent answers."""

    def __init__(self, listener: socket.socket, socket_path: str, boot_json: str, hello: dict[str, object]) -> None:
        self.listener, self.socket_path, self.boot_json, self.hello = listener, socket_path, boot_json, hello


class Shim:
    """QMP, template save or restore, handshake, readiness: blocking calls (the relay's QMP
    client) and ``poll``. No asyncio: with it and qemu.qmp the shim and the relay it becomes used
    ~125 ms of CPU per VM start, now ~45, on a host whose two cores also run the guest. While it
    waits it keeps copying the console and watching the lifeline."""

    def __init__(
        self, conf: dict[str, Any], proc: subprocess.Popen[bytes], agent: socket.socket, qmp: socket.socket, t0: float
    ) -> None:
        self.conf = conf
        self.proc = proc
        self.agent_sock = agent
        self.qmp_sock = qmp
        self.t0 = t0
        self.run_dir = Path(conf["run_dir"])
        self.status_fd: int | None = conf.get("status_fd")
        self.lifeline: int | None = conf.get("lifeline_fd")  # watched here until the relay takes it

    def run(self) -> int | Handoff:
        """Boot or restore the VM and wait for its agent; a :class:`Handoff` for the relay
        process then, or an exit status (template saved, or failure)."""
        self.pidfd = os.pidfd_open(self.proc.pid)
        if self.lifeline is not None:
            os.set_blocking(self.lifeline, False)
        try:
            return self._run()
        finally:
            os.close(self.pidfd)

    def _run(self) -> int | Handoff:
        qmp = self._connect_qmp()
        t_spawned = time.monotonic()
        mode = self.conf.get("mode", "boot")
        if qmp is None:
            return 1
        if mode in ("restore", "resume") and not self._restore(qmp):
            return 1
        if mode not in ("restore", "resume"):  # a restored guest is already past this point
            line = self._receive_line()
            if line != WAITING:
                exited = self.proc.poll() is not None
                status = self.proc.wait() if exited else "still running"
                why = f"QEMU exited with status {status} before the guest init was ready"
                _report(self.status_fd, p.STATUS_ERROR, why)
                self.proc.kill()
                return 1
        if mode == "template":
            return self._save_template(qmp, Path(self.conf["snapshot"]))
        vm = self.conf["vm"]
        settings = {
            "layers": vm["layers"],
            "hostname": safe_hostname(vm["hostname"]),
            "time_ns": time.time_ns(),
            "seed": os.urandom(32).hex(),
            "pids_limit": self.conf.get("pids_limit"),
            "memory_mib": self.conf.get("memory_limit_mib"),
            "cap_mask": self.conf.get("cap_mask"),
            "volatile": bool(self.conf.get("volatile")),
            "net": GUEST_NET if vm.get("network") or vm.get("ports") else None,
            "volumes": [[box_path, ro, name] for _, box_path, ro, name in vm.get("volumes") or []],
        }
        if mode == "resume":  # a guest saved by VmEngine.save: its agent runs already, no settings
            if not self._continue(qmp):
                return 1
        else:
            self.agent_sock.sendall(leanjson.dumps(settings).encode() + b"\n")
        hello: dict[str, object] = {"op": "hello"}
        if mode == "resume":  # the guest's clock stopped when it was saved
            hello["time_ns"] = time.time_ns()
        # The relay sends the hello and reports "ready" when the agent answers: its Python start
        # overlaps the guest's setup of the box (~0.1 s less to the first exec).
        t_handoff = time.monotonic()
        sock_path = _short(Path(self.conf["agent_socket"]))
        sock_path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(sock_path))
        os.chmod(sock_path, 0o600)
        listener.listen(128)
        boot = {
            "shim_to_relay_s": round(t_handoff - self.t0, 4),
            "qemu_pid": self.proc.pid,
            "qmp_connected_s": round(t_spawned - self.t0, 4),
            **guest_stages(Path(self.conf["console"])),
        }
        (self.run_dir / BOOT_JSON_NAME).write_text(leanjson.dumps(boot))
        return Handoff(listener, str(sock_path), leanjson.dumps(boot), hello)

    # --- waiting, with the console copied and the lifeline watched -------------------------
    def _wait(self, fd: int | None, timeout: float) -> bool:
        """Wait up to ``timeout`` s for ``fd`` to be readable (or just wait, ``fd`` None);
        False at once if QEMU exited."""
        poller = select.poll()
        watched = [self.pidfd, *([fd] if fd is not None else [])]
        if _console is not None:
            watched.append(_console[1])
        if self.lifeline is not None:
            watched.append(self.lifeline)
        for each in watched:
            poller.register(each, select.POLLIN)
        deadline = time.monotonic() + timeout
        while True:
            ready = {each for each, _ in poller.poll(max(0.0, deadline - time.monotonic()) * 1000)}
            if _console is not None and _console[1] in ready:
                drain_console()
            if self.lifeline is not None and self.lifeline in ready:
                self._on_lifeline(poller)
            if self.pidfd in ready:
                return False
            if fd is not None and fd in ready:
                return True
            if time.monotonic() >= deadline:
                return fd is None

    def _on_lifeline(self, poller: select.poll) -> None:
        """The owner died while the VM was starting: kill QEMU (every step then fails)."""
        assert self.lifeline is not None
        if not p.lifeline_closed(self.lifeline):
            return
        poller.unregister(self.lifeline)
        self.lifeline = None
        print("shim: the owner died while the VM was starting: killing QEMU", file=sys.stderr, flush=True)
        self.proc.kill()

    def _receive_line(self) -> bytes:
        """Read the guest stream up to its first newline (or what came before QEMU exited)."""
        data = b""
        self.agent_sock.setblocking(False)
        while b"\n" not in data and self._wait(self.agent_sock.fileno(), 3600):
            try:
                chunk = self.agent_sock.recv(1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                break
            data += chunk
        self.agent_sock.setblocking(True)
        return data

    def _sleep(self, seconds: float) -> None:
        self._wait(None, seconds)

    # --- QMP ---------------------------------------------------------------------------------
    def _connect_qmp(self) -> vmcontrol.Qmp | None:
        """The relay's blocking client, after the capabilities negotiation (it skips the greeting)."""
        qmp = vmcontrol.Qmp(self.qmp_sock)
        try:
            if not self._wait(self.qmp_sock.fileno(), QMP_GREETING_TIMEOUT):  # (a loaded host: seconds)
                raise vmcontrol.QmpError("QEMU exited, or sent no greeting")
            qmp.execute("qmp_capabilities")
        except vmcontrol.QmpError as e:
            _report(self.status_fd, p.STATUS_ERROR, f"QEMU's monitor does not answer: {e}")
            self.proc.kill()
            return None
        return qmp

    def _restore(self, qmp: vmcontrol.Qmp) -> bool:
        """Load the saved device state (QEMU waits with ``-incoming defer``); the guest RAM is
        the template's file already, or comes with the state."""
        vm = self.conf["vm"]
        try:
            if vm.get("ram_file") or vm.get("ram_anonymous"):  # as the saved VM had it
                qmp.execute("migrate-set-capabilities", IGNORE_SHARED)
            # QEMU reads the state from a descriptor of ours: no ``exec:cat`` process and pipe
            # between the file and QEMU (a fork's state holds all of the guest's RAM).
            inherited = self.conf.get("incoming_fd")  # a fork's copy: a pipe its source writes into
            if isinstance(inherited, int):
                fd = inherited
            else:
                fd = os.open(vm["incoming"], os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                qmp.execute("getfd", {"fdname": INCOMING_FD_NAME}, fd=fd)
            finally:
                os.close(fd)
            qmp.execute("migrate-incoming", {"uri": f"fd:{INCOMING_FD_NAME}"})
        except (vmcontrol.QmpError, OSError) as e:
            _report(self.status_fd, p.STATUS_ERROR, f"restoring the VM template failed: {e}")
            self.proc.kill()
            return False
        return True

    def _continue(self, qmp: vmcontrol.Qmp) -> bool:
        """Resume mode: once the saved state is loaded, run the guest (it was saved stopped)."""
        deadline = time.monotonic() + 120
        try:
            while True:
                status = qmp.status()
                if status == "paused":
                    qmp.execute("cont")
                    return True
                if status == "running":
                    return True
                if status not in ("inmigrate", "prelaunch") or time.monotonic() > deadline:
                    raise vmcontrol.QmpError(f"the VM is {status} after loading its saved state")
                self._sleep(0.002)  # (a fork's copy loads from a pipe: QEMU answers meanwhile)
        except vmcontrol.QmpError as e:
            _report(self.status_fd, p.STATUS_ERROR, f"resuming the saved VM failed: {e}")
            self.proc.kill()
            return False

    def _save_template(self, qmp: vmcontrol.Qmp, path: Path) -> int:
        """Write the waiting guest's memory to ``path`` (QMP migrate), then stop QEMU."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            if self.conf["vm"].get("ram_file"):
                qmp.execute("migrate-set-capabilities", IGNORE_SHARED)
            qmp.execute("migrate-set-parameters", {"max-bandwidth": UNTHROTTLED})
            import shlex  # (imports re: only a template save needs it)

            qmp.execute("migrate", {"uri": f"exec:cat > {shlex.quote(str(tmp))}"})
            qmp.await_migration(vmcontrol.SAVE_TIMEOUT)  # (the waiting guest prints nothing meanwhile)
            with contextlib.suppress(vmcontrol.QmpError):  # QEMU may close the monitor before answering
                qmp.execute("quit", timeout=2)
            tmp.rename(path)
        except (vmcontrol.QmpError, OSError) as e:
            tmp.unlink(missing_ok=True)
            _report(self.status_fd, p.STATUS_ERROR, f"saving the VM template failed: {e}")
            self.proc.kill()
            return 1
        finally:
            if self.proc.poll() is None and not self._wait_exit(3):
                self.proc.kill()
        _report(self.status_fd, p.STATUS_TEMPLATE, str(path))
        return 0

    def _wait_exit(self, timeout: float) -> bool:
        if self.proc.poll() is None:
            self._wait(None, timeout)  # (returns as QEMU exits)
        return self.proc.poll() is not None


def bind_control(run_dir: Path) -> socket.socket:
    """The relay's control socket (``vmcontrol``), root's and 0600, bound before confinement."""
    path = run_dir / CONTROL_SOCKET_NAME
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(_short(path)))
    os.chmod(path, 0o600)
    sock.listen(8)
    return sock


def _short(path: Path) -> Path:
    """``path`` relative to the working directory when that makes it shorter."""
    try:
        rel = Path(os.path.relpath(path))
    except ValueError:
        return path
    return rel if len(str(rel)) < len(str(path)) else path


def guest_stages(console: Path) -> dict[str, float]:
    """Guest boot stages (seconds since kernel start) from vminit's console markers."""
    out: dict[str, float] = {}
    drain_console()
    try:
        text = console.read_bytes().decode(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.strip().split()
        if len(parts) == 3 and parts[0] == "boxlite-init:":
            try:
                out[f"guest_{parts[1]}_s"] = float(parts[2])
            except ValueError:
                pass
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    conf: dict[str, Any] = leanjson.loads(Path(args[0]).read_text())
    status_fd: int | None = conf.get("status_fd")
    if os.fork():
        os._exit(0)  # the engine reaps this one; the shim itself is re-parented
    os.setsid()
    os.chdir(conf["run_dir"])  # lets long socket paths be bound relative to it (108-byte limit)
    t0 = time.monotonic()
    run_dir = Path(conf["run_dir"])
    log_fd = os.open(run_dir / SHIM_LOG_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(null)
    _report(status_fd, p.STATUS_PID, str(os.getpid()))
    try:
        vm = VmConfig(**conf["vm"])
        start_virtiofsd(vm, run_dir, log_fd)
        start_dnsproxy(vm, log_fd)
        start_secretproxy(vm, log_fd)
        saves = (os.path.dirname(conf["snapshot"]),) if conf.get("mode") == "template" else ()
        proc, agent, qmp = start_qemu(vm, run_dir, log_fd, saves)
    except (OSError, ValueError) as e:
        _report(status_fd, p.STATUS_ERROR, f"could not start QEMU: {e}")
        return 1
    (run_dir / QEMU_PID_NAME).write_text(str(proc.pid))
    qmp_keep = os.dup(qmp.fileno())  # survives the QMP client's close: the relay's (vmcontrol)
    (run_dir / SHIM_PID_NAME).write_text(f"{os.getpid()} {process_start_time(os.getpid())}")
    shim = Shim(conf, proc, agent, qmp, t0)
    try:
        result = shim.run()
    except BaseException as e:
        _report(shim.status_fd, p.STATUS_ERROR, f"shim failed: {e!r}")
        proc.kill()
        raise
    if not isinstance(result, Handoff):
        print(f"shim: QEMU exited with status {result}", file=sys.stderr, flush=True)
        return 0 if result == 0 else 1
    from .relayd import exec_relay

    control = bind_control(run_dir)  # pause/resume/save: the relay drives QEMU over QMP (vmcontrol)
    qmp.close()  # the QMP client's; qmp_keep (a dup) stays connected for the relay
    # Confined before "ready": once the box is handed out, this process never again holds a
    # capability (the relay it becomes parses what the guest sends).
    confine_relay(str(run_dir), os.path.dirname(vm.console))
    lifeline = conf.get("lifeline_fd")
    relay_args = {
        "guest_fd": agent.fileno(),
        "listen_fd": result.listener.fileno(),
        "qemu_pid": proc.pid,
        "lifeline_fd": lifeline,
        "socket_path": result.socket_path,
        "hello": result.hello,
        "ready_fd": shim.status_fd,  # "ready" once the agent answers the hello
        "ready_boot": result.boot_json,
        "log_dir": str(run_dir),
    }
    keep = [agent.fileno(), result.listener.fileno(), *([lifeline] if lifeline is not None else [])]
    keep += [shim.status_fd] if shim.status_fd is not None else []
    relay_args["qmp_fd"], relay_args["control_fd"] = qmp_keep, control.fileno()
    relay_args["resume_state"] = conf.get("relay_state")
    keep += [qmp_keep, control.fileno()]
    if _console is not None:
        drain_console()
        relay_args["console_fd"], relay_args["console_path"] = _console[1], vm.console
        keep.append(_console[1])
    sys.stderr.flush()
    exec_relay(PKG_DIR, relay_args, keep)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
