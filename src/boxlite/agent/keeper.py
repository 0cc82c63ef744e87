"""Namespace engine: the host-side keeper of one box, so that nothing of it outlives the box.

The box's own processes die with PID 1 (the agent), which watches the owner's lifeline. But a
box also has host-side parts the agent cannot reach from inside its namespaces: its ``pasta``
(outbound network, published ports), its cgroup directories. The keeper owns them:

* forked by :func:`nsboot.boot` (process A) *before* A creates and joins the box's cgroups
  (:func:`make_cgroups`) and namespaces, so it stays in the host's network namespace and the
  runtime's cgroups (its memory is not the box's, and it can rmdir the box's cgroups), and no
  box cgroup ever exists without a keeper (an owner killed before the hand-over to the zygote
  left nothing behind; one killed after it left a keeper);
* A hands it a pidfd of the box's PID 1 and an fd of the box's network namespace;
* it runs ``pasta`` in the foreground as its own child, with ``PR_SET_PDEATHSIG`` (SIGKILL) set
  between fork and exec: the keeper is single-threaded, so "parent thread" is the keeper itself
  and pasta dies whenever the keeper does, even by SIGKILL. pasta's readiness is its pid
  written into a FIFO (``--pid``), its configuration of the namespace precedes that;
* when PID 1 exits, for whatever reason (stop, crash, the lifeline), it kills pasta (through a
  pidfd: no pid reuse race) and removes the box's cgroup directories once the box's last
  processes left them, then exits. The engine counts the box stopped when the keeper's lock is
  released: a pasta holding published ports has exited by then (a restart binds them again);
  one without is still exiting (the kernel unregistering its tap device, ~40 ms) and is reaped
  after the release;
* it watches the lifeline too: if the agent has not ended the box ``LIFELINE_GRACE`` seconds
  after the owner died (it hangs, or is still booting), the keeper SIGKILLs PID 1.

Detached boxes get no lifeline: their keeper and pasta live as long as the box. The keeper
holds an exclusive ``flock`` on ``keeper.pid`` (it writes its pid there) while it lives: the
engine waits for it to be released before it reuses the box's cgroup paths, so a keeper that
is still cleaning up never removes the next start's cgroups. Stdlib only (runs in the zygote).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import socket
import sys
import time

from . import linux
from .cgroupkill import kill_cgroup_members, thaw_cgroup
from .helperproc import Helper, spawn
from .protocol import STATUS_KEEPER, STATUS_NET_ERROR, lifeline_closed, status_line

TYPE_CHECKING = False  # not from typing (~2 ms to import into every box's agent)
if TYPE_CHECKING:
    from typing import Any

LIFELINE_GRACE = 2.0
"""Seconds the agent gets to end the box after the owner died, before the keeper kills it."""
PASTA_READY_TIMEOUT = 20.0
PASTA_TERM_GRACE = 1.0
CGROUP_RMDIR_TIMEOUT = 5.0
NFT_TIMEOUT = 10.0
"""Seconds ``nft`` gets to load the box's port rules into its network namespace."""
MAX_HELPER_LOG = 64 << 10
"""Bytes of pasta's stderr copied into the boot log (it is quiet; a chatty one is cut)."""


def _write_sysctls(netns: int, sysctls: dict[str, str]) -> None:
    """Write the engine's ``sysctls`` (path below /proc/sys/net: value) in the box's network
    namespace, from a short-lived child that joins it (/proc/sys/net is the calling thread's
    namespace's; the keeper itself stays in the host's, and a thread would cost it ``threading``
    and memory for as long as the box lives). Best effort: they tune speed and keep pasta's
    IPv6 right (engines/namespace/network.py), and a host without IPv6 has no such files."""
    if not sysctls:
        return
    pid = os.fork()
    if pid == 0:
        try:
            linux.setns(netns, linux.CLONE_NEWNET)
            for key, value in sysctls.items():
                if key.startswith("net/") and ".." not in key.split("/"):
                    with contextlib.suppress(OSError), open(f"/proc/sys/{key}", "w") as f:
                        f.write(value)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _netns_nft(netns: int, nft: str, rules: str) -> str | None:
    """Load ``rules`` with ``nft -f -`` in the box's network namespace, from a short-lived child
    that joins it (as :func:`_write_sysctls`); None when loaded, else what went wrong. Bounded:
    ``NFT_TIMEOUT`` seconds, ``MAX_HELPER_LOG`` bytes of its output kept."""
    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            linux.setns(netns, linux.CLONE_NEWNET)
            os.dup2(in_r, 0)
            os.dup2(out_w, 1)
            os.dup2(out_w, 2)
            os.execv(nft, [nft, "-f", "-"])
        finally:
            os._exit(127)
    os.close(in_r)
    os.close(out_w)
    output = bytearray()
    try:
        with contextlib.suppress(OSError):
            os.write(in_w, rules.encode())  # a few hundred bytes: within the pipe's buffer
        os.close(in_w)
        deadline = time.monotonic() + NFT_TIMEOUT
        while (left := deadline - time.monotonic()) > 0 and select.select([out_r], [], [], left)[0]:
            chunk = os.read(out_r, 4096)
            if not chunk:
                break
            output += chunk[: MAX_HELPER_LOG - len(output)]
        while not (reaped := os.waitpid(pid, os.WNOHANG))[0]:  # (its output may end just before it does)
            if time.monotonic() >= deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return f"nft did not finish within {NFT_TIMEOUT:g}s"
            time.sleep(0.002)
        status = reaped[1]
    finally:
        os.close(out_r)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        said = output.decode(errors="replace").strip()[:500] or f"exit status {code}"
        return f"nft refused the box's port rules: {said}"
    return None


def fork_keeper(config: dict[str, Any], status_fd: int) -> socket.socket | None:
    """In process A, before anything else: fork the keeper; returns A's end of its socket
    (``None`` when the config asks for no keeper)."""
    if not config.get("keeper"):
        return None
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            ours.close()
            code = Keeper(config, status_fd, theirs).run()
        except BaseException:
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
        finally:
            os._exit(code)
    theirs.close()
    return ours


def make_cgroups(config: dict[str, Any]) -> None:
    """In process A, after :func:`fork_keeper`: create the box's cgroups and apply its limits
    (``config["cgroup_setup"]``, planned by the engine), so that none exists before the keeper
    that removes it. Raises OSError naming the step that failed; the procs files of optional
    cgroups that could not be made are dropped from ``config["cgroup_procs"]``."""
    missing = set()
    for op, path, value, required in config.get("cgroup_setup") or []:
        try:
            if op == "mkdir":
                try:
                    os.mkdir(path, 0o755)
                except FileExistsError:
                    pass
            elif required or os.path.exists(path):
                with open(path, "w") as f:
                    f.write(value)
        except OSError as e:
            if required:
                what = f"create cgroup {path}" if op == "mkdir" else f"write {value!r} to {path}"
                raise OSError(f"cannot {what}: {e.strerror}") from None
            if op == "mkdir":
                missing.add(os.path.join(path, "cgroup.procs"))
    if missing:
        config["cgroup_procs"] = [p for p in config.get("cgroup_procs", []) if p not in missing]


def hand_over(sock: socket.socket | None, box_pid: int) -> None:
    """In process A, right after forking PID 1 (its child, so the pid cannot be reused yet):
    send the keeper a pidfd of it and A's (the box's) network namespace."""
    if sock is None:
        return
    fds = []
    try:
        fds.append(os.pidfd_open(box_pid))
        fds.append(os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC))
        socket.send_fds(sock, [str(box_pid).encode()], fds)
    except OSError as e:
        print(f"boxlite: cannot hand the box over to its keeper: {e}", file=sys.stderr, flush=True)
    finally:
        for fd in fds:
            os.close(fd)
        sock.close()


class Keeper:
    def __init__(self, config: dict[str, Any], status_fd: int, sock: socket.socket) -> None:
        self.conf: dict[str, Any] = config["keeper"]
        self.status: int | None = status_fd
        self.sock = sock
        self.lifeline: int | None = config.get("lifeline_fd")
        if self.lifeline is not None:
            os.set_blocking(self.lifeline, False)
        self.cgroup_dirs = sorted({os.path.dirname(p) for p in config.get("cgroup_procs", [])}, key=len, reverse=True)
        self.cgroup_ids: dict[str, int | None] = {}
        """Inodes of the box's cgroup dirs, once A made them (a newer dir at a path is not ours)."""
        self.box_pidfd: int | None = None
        self.pasta: Helper | None = None
        self.pasta_pidfd: int | None = None
        self.pasta_err: int | None = None
        self.pasta_termed_at: float | None = None
        self.dnsproxy: Helper | None = None
        self.secretproxy: Helper | None = None
        self.logged = 0
        if config.get("log_fd") is not None:
            os.close(int(config["log_fd"]))  # A dup'ed it to 1 and 2

    def run(self) -> int:
        os.chdir("/")
        lock = os.open(self.conf["lock"], os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)
        os.ftruncate(lock, 0)
        os.write(lock, f"{os.getpid()}\n".encode())
        try:
            self._serve()
        except BaseException:
            self._kill_box()  # a box nobody keeps would leak its helpers: it ends with its keeper
            raise
        finally:
            if self.conf.get("pasta_ports"):
                self._kill_pasta()  # its sockets hold the box's host ports: free before a restart binds them
            else:
                self._term_pasta()  # its exit (the kernel unregistering the box's tap, ~40 ms) overlaps the rest
            self._kill_dnsproxy()
            if self.secretproxy is not None:
                self.secretproxy.kill()
                self.secretproxy.wait()
            self._remove_cgroups()
            os.close(lock)  # done: the runtime waiting on the lock goes on now, not after our exit
            self._kill_pasta()
        return 0

    def _serve(self) -> None:
        netns = self._receive()
        self.cgroup_ids = {d: _inode(d) for d in self.cgroup_dirs}  # A is past making them (or gone)
        if netns is None:
            return  # A failed before PID 1 existed (it reported why)
        try:
            if self.conf.get("pasta") and not (
                self._start_dnsproxy() and self._start_secretproxy(netns) and self._start_pasta(netns)
            ):
                self._kill_box()  # no box without the network it was promised
        finally:
            os.close(netns)
        self._report(STATUS_KEEPER, str(os.getpid()))
        self._watch()

    def _receive(self) -> int | None:
        """PID 1's pidfd (kept) and the box's network namespace (returned) from A."""
        try:
            _, fds, _, _ = socket.recv_fds(self.sock, 64, 2)
        except OSError:
            return None
        finally:
            self.sock.close()
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            return None
        self.box_pidfd = fds[0]
        return fds[1]

    def _report(self, word: str, arg: str) -> None:
        """One status line; the last one (``keeper``) closes the keeper's copy of the pipe."""
        if self.status is None:
            return
        try:
            os.write(self.status, status_line(word, arg))
        except OSError:
            pass
        if word == STATUS_KEEPER:
            os.close(self.status)
            self.status = None

    # --- the DNS proxy of an allow-listed box (boxlite.engines.net.dnsproxy) -----------------
    def _start_dnsproxy(self) -> bool:
        """Start the box's DNS proxy (before pasta: its rules must be in place first) and wait
        for its ``ready`` line. It dies with the keeper (``PR_SET_PDEATHSIG``)."""
        argv = self.conf.get("dnsproxy")
        if not argv:
            return True
        self.dnsproxy = self._start_proxy(argv, "DNS proxy", None)
        return self.dnsproxy is not None

    def _start_secretproxy(self, netns: int) -> bool:
        """Start the box's secret proxy (boxlite.engines.net.secretproxy), after the DNS proxy
        (which flushes the box's chain) and before pasta, in the box's helper group: its own
        connections pass the box's rules (host guard, allow-list) like the box's. With
        ``secretproxy_netns`` it gets the box's network namespace too (its fast path)."""
        argv = self.conf.get("secretproxy")
        if not argv:
            return True
        fds = [netns] if self.conf.get("secretproxy_netns") else []
        argv = [*argv, *(f"--netns-fd={fd}" for fd in fds)]
        self.secretproxy = self._start_proxy(argv, "secret proxy", int(self.conf["net_gid"]), fds)
        return self.secretproxy is not None

    def _start_proxy(self, argv: list[str], what: str, gid: int | None, fds: list[int] | None = None) -> Helper | None:
        """Run a host-side proxy of the box and wait for its ``ready`` line (None: it failed, reported)."""
        out, out_w = os.pipe2(os.O_CLOEXEC)
        try:
            proc = spawn(argv, stdout=out_w, pass_fds=fds or (), gid=gid)
        except OSError as e:
            os.close(out)
            self._report(STATUS_NET_ERROR, f"cannot run the {what}: {e}")
            return None
        finally:
            os.close(out_w)
        deadline, text = time.monotonic() + PASTA_READY_TIMEOUT, b""
        while b"\n" not in text and len(text) < 4096 and time.monotonic() < deadline:
            if not select.select([out], [], [], max(0.0, deadline - time.monotonic()))[0]:
                break
            chunk = os.read(out, 64)
            if not chunk:
                break
            text += chunk
        os.close(out)
        if not text.startswith(b"ready "):
            self._report(STATUS_NET_ERROR, f"the box's {what} did not start (see the boot log)")
            return None
        return proc

    def _kill_dnsproxy(self) -> None:
        if self.dnsproxy is not None:
            self.dnsproxy.kill()
            self.dnsproxy.wait()
            self.dnsproxy = None

    # --- pasta ----------------------------------------------------------------------------
    def _start_pasta(self, netns: int) -> bool:
        """Start pasta on the box's network namespace and wait until it configured it."""
        if self.conf.get("netns_nft"):  # the box's UDP port moves, in place before pasta forwards
            failed = _netns_nft(netns, *self.conf["netns_nft"])
            if failed is not None:
                self._report(STATUS_NET_ERROR, failed)
                return False
        fifo = self.conf["pasta_fifo"]
        if os.path.lexists(fifo):
            os.unlink(fifo)
        os.mkfifo(fifo, 0o600)
        ready = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        hold = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # no EOF before pasta writes
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        argv = [*self.conf["pasta"], "--pid", fifo, "--netns", f"/proc/self/fd/{netns}"]
        _write_sysctls(netns, self.conf.get("sysctls") or {})
        try:
            try:
                # in the host guard's group before pasta opens any socket
                self.pasta = spawn(argv, stdout=err_w, stderr=err_w, pass_fds=[netns], gid=int(self.conf["net_gid"]))
            except OSError as e:
                self._report(STATUS_NET_ERROR, f"cannot run pasta: {e}")
                return False
            finally:
                os.close(err_w)
            self.pasta_pidfd = os.pidfd_open(self.pasta.pid)
            self.pasta_err = err_r
            os.set_blocking(err_r, False)
            line = self._await_pasta(ready)
        finally:
            os.close(ready)
            os.close(hold)
            os.unlink(fifo)
        if line is None:
            return False
        pid_file = self.conf["pasta_pid"]
        with open(os.open(pid_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600), "w") as f:
            f.write(f"{self.pasta.pid}\n")
        return True

    def _await_pasta(self, ready: int) -> str | None:
        assert self.pasta_pidfd is not None and self.box_pidfd is not None
        deadline = time.monotonic() + PASTA_READY_TIMEOUT
        text, errors = b"", bytearray()
        while time.monotonic() < deadline:
            watched = [fd for fd in (ready, self.pasta_err, self.pasta_pidfd, self.box_pidfd) if fd is not None]
            r, _, _ = select.select(watched, [], [], max(0.0, deadline - time.monotonic()))
            if self.pasta_err is not None and self.pasta_err in r:
                errors += self._read_err()[: 4096 - len(errors)]
            if ready in r:
                try:
                    text += os.read(ready, 64)
                except BlockingIOError:
                    pass
                if b"\n" in text:
                    return text.decode(errors="replace").strip()
            if self.box_pidfd in r:
                return None  # the box died while booting: A or PID 1 reported why
            if self.pasta_pidfd in r:
                errors += self._read_err()[: 4096 - len(errors)]
                detail = " ".join(x for x in errors.decode(errors="replace").splitlines() if "syslog" not in x)
                self._report(STATUS_NET_ERROR, detail or f"pasta exited with status {self.pasta.wait()}")  # type: ignore[union-attr]
                return None
        self._report(STATUS_NET_ERROR, f"pasta did not configure the box network within {PASTA_READY_TIMEOUT:g}s")
        return None

    def _read_err(self) -> bytes:
        """Drain pasta's stderr; copy a bounded amount of it into the boot log."""
        out = b""
        while self.pasta_err is not None:
            try:
                chunk = os.read(self.pasta_err, 4096)
            except BlockingIOError:
                break
            if not chunk:
                os.close(self.pasta_err)
                self.pasta_err = None
                break
            out += chunk
        if out and self.logged < MAX_HELPER_LOG:
            os.write(2, out[: MAX_HELPER_LOG - self.logged])
            self.logged += len(out)
        return out

    def _term_pasta(self) -> None:
        """SIGTERM pasta and forget its pid file (the engine then has no pasta of the box to
        kill); :meth:`_kill_pasta` waits for it."""
        if self.pasta is None or self.pasta_termed_at is not None:
            return
        assert self.pasta_pidfd is not None
        self.pasta_termed_at = time.monotonic()
        try:
            signal.pidfd_send_signal(self.pasta_pidfd, signal.SIGTERM)
        except OSError:
            pass
        _unlink(self.conf["pasta_pid"])

    def _kill_pasta(self) -> None:
        """SIGTERM pasta (unless done), SIGKILL it if it lingers, reap it; forget its pid file."""
        if self.pasta is None:
            return
        assert self.pasta_pidfd is not None
        self._term_pasta()
        assert self.pasta_termed_at is not None
        try:
            grace = max(0.0, self.pasta_termed_at + PASTA_TERM_GRACE - time.monotonic())
            if not select.select([self.pasta_pidfd], [], [], grace)[0]:
                signal.pidfd_send_signal(self.pasta_pidfd, signal.SIGKILL)
        except OSError:
            pass
        self.pasta.wait()
        os.close(self.pasta_pidfd)
        self.pasta = self.pasta_pidfd = self.pasta_termed_at = None

    # --- the box's life -------------------------------------------------------------------
    def _watch(self) -> None:
        """Until PID 1 exits; a dead owner's box is killed after ``LIFELINE_GRACE``."""
        assert self.box_pidfd is not None
        kill_at: float | None = None
        while True:
            watched = [self.box_pidfd]
            watched += [fd for fd in (self.lifeline, self.pasta_err, self.pasta_pidfd) if fd is not None]
            timeout = None if kill_at is None else max(0.0, kill_at - time.monotonic())
            r, _, _ = select.select(watched, [], [], timeout)
            if self.box_pidfd in r:
                return
            if kill_at is not None and time.monotonic() >= kill_at:
                print("boxlite keeper: the owner died, the box did not stop: killing it", file=sys.stderr, flush=True)
                self._kill_box()
                kill_at = None
            if self.lifeline is not None and self.lifeline in r and lifeline_closed(self.lifeline):
                self.lifeline = None
                kill_at = time.monotonic() + LIFELINE_GRACE
            if self.pasta_err is not None and self.pasta_err in r:
                self._read_err()
            if self.pasta_pidfd is not None and self.pasta_pidfd in r:
                print(f"boxlite keeper: pasta exited ({self.pasta.wait()})", file=sys.stderr, flush=True)  # type: ignore[union-attr]
                os.close(self.pasta_pidfd)
                self.pasta = self.pasta_pidfd = None
                _unlink(self.conf["pasta_pid"])

    def _kill_box(self) -> None:
        if self.box_pidfd is None:
            return
        try:
            signal.pidfd_send_signal(self.box_pidfd, signal.SIGKILL)
        except OSError:
            pass  # gone already
        for path in self.cgroup_dirs:  # a paused box: a frozen task dies only once thawed
            thaw_cgroup(path)

    def _remove_cgroups(self) -> None:
        """rmdir the box's cgroups once its processes left them (PID 1's death kills the rest
        of its pid namespace; they may take a moment). Only the directories this keeper was
        started for: a path that now names a newer directory is left alone."""
        started = time.monotonic()
        deadline = started + CGROUP_RMDIR_TIMEOUT
        for path in self.cgroup_dirs:
            while (ino := _inode(path)) is not None and ino == self.cgroup_ids.get(path):
                try:
                    os.rmdir(path)
                except OSError:
                    now = time.monotonic()
                    if now > deadline:
                        print(f"boxlite keeper: cannot remove cgroup {path}", file=sys.stderr, flush=True)
                        break
                    if now > started + 1:
                        kill_cgroup_members(path)  # only box processes can be in it
                    time.sleep(0.001 if now < started + 0.05 else 0.01)  # the engine waits for this keeper


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
