"""What a VM box's shim becomes once the guest is ready: a small relay process (stdlib only).

The shim's modules (the QEMU command line, Landlock, subprocess, dataclasses) are for booting
or restoring the VM; serving clients needs none of them. So once the agent answered, the shim
``execve``s this module
in a fresh ``python -I -S`` (same pid, QEMU stays its child and keeps dying with it), handing
over the guest stream, the listening agent socket, the lifeline and QEMU's pid. It then:

* relays clients ⇄ guest through :class:`relay.Relay` on one ``selectors`` loop;
* on lifeline EOF or SIGTERM/SIGINT/SIGHUP asks the agent to shut down (the guest powers
  off and QEMU exits), then SIGTERMs QEMU (a graceful quit), then SIGKILLs it. A dead owner
  (lifeline EOF) waits for nobody: the agent gets no grace and QEMU its SIGTERM after
  ``ORPHAN_TIMEOUT``. QEMU and virtiofsd die with this process in any case
  (``PR_SET_PDEATHSIG``, see ``shim.py``), so this process is the one to tie to the lifeline;
* exits with QEMU's status once QEMU is gone, removing the agent socket.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable

from ...agent import leanjson, mainexit
from ...agent import protocol as p
from ...agent.logfile import LogLease, SharedLogs
from . import vmcontrol
from .relay import Client, LogSink, Relay, Route

TYPE_CHECKING = False  # not imported from typing: the relay process stays small without it
if TYPE_CHECKING:
    from typing import Any

SHUTDOWN_GRACE = 3.0  # seconds the agent gets to stop box processes
SHUTDOWN_TIMEOUT = 10.0  # then SIGTERM to QEMU (it quits), then after QUIT_TIMEOUT SIGKILL
QUIT_TIMEOUT = 3.0
ORPHAN_TIMEOUT = 3.0  # after the owner died (lifeline EOF): SIGTERM to QEMU if the guest has not powered off
CLIENT_BACKLOG = 64 << 20
"""Bytes queued for a client that does not read; more means the guest ignores credit: drop the client."""
BOOTSTRAP = (
    "import sys; sys.path.insert(0, sys.argv[1]); from boxlite.engines.vm.relayd import main; "
    "sys.exit(main(sys.argv[2]))"
)
"""Run under ``python -I -S``, given the directory holding the boxlite package (the packages'
``__init__`` modules import nothing eagerly, so this loads no more than the relay needs)."""


class _Peer:
    """A non-blocking socket with an output buffer."""

    __slots__ = ("closed", "frames", "out", "sock")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.out = bytearray()
        self.frames = p.FrameReader()
        self.closed = False


class RelayServer:
    """The loop. ``qemu_pid`` None (tests): runs until :meth:`stop` is called and then returns."""

    def __init__(
        self,
        guest: socket.socket,
        listener: socket.socket,
        qemu_pid: int | None = None,
        lifeline_fd: int | None = None,
        leftover: bytes = b"",
        log_dir: str | None = None,
        qmp: socket.socket | None = None,
        control: socket.socket | None = None,
        resume_state: dict[str, Any] | None = None,
    ) -> None:
        self.sel = selectors.DefaultSelector()
        self.guest = _Peer(guest)
        self.listener = listener
        listener.setblocking(False)
        self.log_dir = log_dir
        self.logs = SharedLogs()  # detached executions naming one log share it and its cap
        self.relay = Relay(
            lambda data: self._write(self.guest, data),
            open_log=log_opener(log_dir, self.logs),
            on_main_exit=self._main_exited if log_dir else None,
        )
        self.clients: dict[int, tuple[_Peer, Client]] = {}
        self.qemu_pid = qemu_pid
        self.pidfd = os.pidfd_open(qemu_pid) if qemu_pid else None
        self.status: int | None = None
        self.stopping = False
        self.broken: str | None = None  # why the guest stream was closed on a protocol violation
        self.timers: list[tuple[float, Callable[[], None]]] = []
        self._wake_r, self.wake_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.sel.register(guest, selectors.EVENT_READ, self._on_guest)
        self.sel.register(listener, selectors.EVENT_READ, self._on_accept)
        self.sel.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        if self.pidfd is not None:
            self.sel.register(self.pidfd, selectors.EVENT_READ, self._on_qemu_exit)
        if lifeline_fd is not None:
            os.set_blocking(lifeline_fd, False)
            self.sel.register(lifeline_fd, selectors.EVENT_READ, lambda: self._on_lifeline(lifeline_fd))
        if leftover:
            self.relay.feed_guest(leftover)
        if resume_state is not None:
            self._resume_logs(resume_state)
        self.qmp = vmcontrol.Qmp(qmp) if qmp is not None else None
        self.paused = False  # QMP "stop" (box.pause()): resumed before any shutdown
        if qmp is not None:
            qmp.setblocking(False)
            self.sel.register(qmp, selectors.EVENT_READ, self._on_qmp)
        if control is not None:
            control.setblocking(False)
            self.sel.register(control, selectors.EVENT_READ, lambda: self._on_control(control))

    # --- pause / resume / save (vmcontrol) ------------------------------------------------
    def _before_save(self) -> None:
        """Before the guest is saved to disk: the clients' connections cannot outlive this
        process, so their executions are killed (as for a dropped connection) and the frames
        saying so reach QEMU; detached executions (the main process) continue after the resume,
        so the relay that resumes gets their channels (``RELAY_STATE_NAME``)."""
        for peer, _ in list(self.clients.values()):
            self._close(peer)
        deadline = time.monotonic() + 2.0
        while self.guest.out and not self.guest.closed and time.monotonic() < deadline:
            self.guest.sock.setblocking(True)
            self.guest.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                self._flush(self.guest)
            except OSError:
                break
            finally:
                self.guest.sock.setblocking(False)
        time.sleep(0.05)  # QEMU reads its socket in its own loop: let it take the last frames
        self._write_relay_state(vmcontrol.RELAY_STATE_NAME)

    def _write_relay_state(self, name: str) -> None:
        logs = [
            [gid, route.channel, route.client.file.path, route.client.file.max_bytes, route.client.main]
            for gid, route in self.relay.routes.items()
            if isinstance(route.client, LogSink)
        ]
        state = {"next": self.relay.next_channel(), "logs": logs}
        if self.log_dir:
            with open(os.path.join(self.log_dir, name), "w") as f:
                f.write(leanjson.dumps(state))

    def _resume_logs(self, state: dict[str, Any]) -> None:
        """The detached executions of the relay that saved the guest: their output goes on
        into the same host logs."""
        self.relay.set_next_channel(int(state.get("next") or 1))
        for gid, channel, path, limit, main in state.get("logs") or []:
            try:  # only a log of this box's run dir, whatever the file says
                file = self.logs.open(os.path.join(self.log_dir or ".", os.path.basename(str(path))), int(limit))
            except (OSError, ValueError):
                continue
            sink = LogSink(self.relay, int(gid), Client(on_frame=lambda *_: None), int(channel), file)
            sink.main = bool(main)
            self.relay.routes[int(gid)] = Route(sink, int(channel), True)

    def await_ready(self, status_fd: int | None, boot_json: str, hello: dict[str, Any]) -> None:
        """Send the agent its first ``hello`` (the shim exec'd this relay right after handing the
        guest its settings, so that this start overlaps the guest's setup) and, when it answers,
        report ``ready <boot_json>`` on ``status_fd``, the line the engine waits for, then set the
        guest's clock. If QEMU exits first, this process exits and the engine reads EOF: the box
        failed to start."""
        internal = Client()

        def answered(kind: int, _channel: int, _payload: bytes) -> None:
            if kind != p.RESPONSE:
                return
            self.relay.detach(internal)
            if status_fd is not None:
                try:
                    os.write(status_fd, p.status_line(p.STATUS_READY, boot_json))
                except OSError:
                    pass
                os.close(status_fd)
            self._set_guest_clock()

        internal.on_frame = answered
        self.relay.attach(internal)
        self.relay.send(internal, p.REQUEST, 1, leanjson.dumps(hello).encode())

    def _set_guest_clock(self) -> None:
        """A ``hello`` with the host's time sets the guest's clock (the answer is dropped). The
        clock stood still while the guest was stopped; and a guest restored from its template
        falls ~0.15 s behind during its setup after the host's settings set the clock (measured
        under TCG), so the clock is set again once the agent answers, when a frame takes ~1 ms."""
        internal = Client(on_frame=lambda *_: None)
        self.relay.attach(internal)
        body = leanjson.dumps({"op": "hello", "time_ns": time.time_ns()}).encode()
        self.relay.send(internal, p.REQUEST, 1, body)
        self.relay.detach(internal)

    def _on_qmp(self) -> None:
        assert self.qmp is not None
        if not self.qmp.drain():  # QEMU is going away; its exit ends the loop
            self.sel.unregister(self.qmp.sock)

    def _on_control(self, listener: socket.socket) -> None:
        """One host request (pause, resume, status, save to disk), answered at once."""
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, ConnectionAbortedError):
            return
        with conn:
            request, fd = vmcontrol.read_request(conn)
            try:
                reply = self._control_reply(request, fd)
            finally:
                if fd >= 0:
                    os.close(fd)
            try:
                conn.settimeout(2.0)
                conn.sendall(leanjson.dumps(reply).encode() + b"\n")
            except OSError:
                pass

    def _control_reply(self, request: dict[str, object] | None, fd: int) -> dict[str, object]:
        if request is None:
            return {"ok": False, "error": "malformed control request"}
        if self.qmp is None or self.stopping:
            return {"ok": False, "error": "the VM is stopping" if self.stopping else "no QMP connection"}
        op = request["op"]
        if op == "save":
            self._before_save()
        elif op in ("snapshot", "relaystate"):  # a fork: this VM goes on, its clients too
            self._write_relay_state(vmcontrol.FORK_RELAY_NAME)
            if op == "relaystate":
                return {"ok": True}
        reply = vmcontrol.handle(self.qmp, request, self.log_dir or ".", fd)
        if reply.get("ok") and op in ("stop", "cont"):
            self.paused = op == "stop"
        if reply.get("ok") and op == "cont":
            self._set_guest_clock()
        if reply.get("ok") and op == "save":  # saved: QEMU quits, the relay ends with it
            self.stopping = True
            try:
                self.qmp.execute("quit")
            except vmcontrol.QmpError:
                pass
            self._after(QUIT_TIMEOUT, lambda: self._signal_qemu(signal.SIGKILL, None))
        return reply

    # --- output -------------------------------------------------------------------------
    def _write(self, peer: _Peer, data: bytes) -> None:
        if peer.closed:
            return
        if not peer.out:
            try:
                n = peer.sock.send(data)
            except BlockingIOError:
                n = 0
            except OSError:
                self._close(peer)
                return
            if n == len(data):
                return
            data = data[n:]
            self.sel.modify(peer.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, self._handler(peer))
        peer.out += data
        if peer is not self.guest and len(peer.out) > CLIENT_BACKLOG:
            print("shim: a client fell more than CLIENT_BACKLOG behind: dropping it", file=sys.stderr, flush=True)
            self._close(peer)

    def _flush(self, peer: _Peer) -> None:
        try:
            n = peer.sock.send(peer.out[: 1 << 20])
        except BlockingIOError:
            return
        except OSError:
            self._close(peer)
            return
        del peer.out[:n]
        if not peer.out:
            self.sel.modify(peer.sock, selectors.EVENT_READ, self._handler(peer))

    def _handler(self, peer: _Peer) -> Callable[[], None]:
        key = self.sel.get_key(peer.sock)
        return key.data  # type: ignore[no-any-return]

    # --- events -------------------------------------------------------------------------
    def _on_guest(self) -> None:
        if self.guest.out:
            self._flush(self.guest)
        if self.guest.closed:
            return
        data = self._read(self.guest)
        if data:
            try:
                self.relay.feed_guest(data)
            except p.FrameError as e:
                self._guest_broke(str(e))
        elif data is not None:  # EOF: QEMU is going away; its exit ends the loop
            self._close(self.guest)
            if self.pidfd is None:
                self.status = 0

    def _guest_broke(self, why: str) -> None:
        """The guest sent something that is not a frame (e.g. longer than ``MAX_PAYLOAD``): a
        broken or hostile agent. Its stream is closed, every waiting client gets an error answer
        and is disconnected, new clients are refused and QEMU is stopped (the relay then exits)."""
        self.broken = f"the guest agent broke the protocol ({why}); the box was stopped"
        print(f"shim: {self.broken}", file=sys.stderr, flush=True)
        self._close(self.guest)
        error = leanjson.dumps(p.error_body("EngineError", self.broken)).encode()
        for peer, client in list(self.clients.values()):
            for channel in list(client.channels):
                client.deliver(p.RESPONSE, channel, error)
            self._close(peer)
        self.stopping = True
        if self.pidfd is None:
            self.status = 0  # tests: no QEMU to wait for
        else:
            self._signal_qemu(signal.SIGTERM, QUIT_TIMEOUT)

    def _read(self, peer: _Peer) -> bytes | None:
        """Bytes, b"" at EOF/error, None when nothing is there (spurious wakeup)."""
        try:
            return peer.sock.recv(1 << 18)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    def _on_accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, ConnectionAbortedError):
            return
        if self.broken is not None:
            sock.close()
            return
        peer = _Peer(sock)
        client = Client(write=lambda data: self._write(peer, data))
        self.relay.attach(client)
        self.clients[sock.fileno()] = (peer, client)

        def on_event() -> None:
            if peer.out and not peer.closed:
                self._flush(peer)
            if peer.closed:
                return
            data = self._read(peer)
            if data is None:
                return
            if not data:
                self._close(peer)
                return
            peer.frames.feed(data)
            try:
                for kind, channel, payload in peer.frames:
                    self.relay.send(client, kind, channel, payload)
            except p.FrameError:
                self._close(peer)

        self.sel.register(sock, selectors.EVENT_READ, on_event)

    def _close(self, peer: _Peer) -> None:
        if peer.closed:
            return
        peer.closed = True
        entry = self.clients.pop(peer.sock.fileno(), None)
        self.sel.unregister(peer.sock)
        if entry is not None:
            self.relay.detach(entry[1])
        peer.sock.close()

    def _on_wake(self) -> None:
        try:
            signals = os.read(self._wake_r, 64)
        except BlockingIOError:
            return
        if any(sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP) for sig in signals):
            self.request_stop("signal")

    def _on_lifeline(self, fd: int) -> None:
        if not p.lifeline_closed(fd):
            return
        self.sel.unregister(fd)
        self.request_stop("lifeline closed: the owner died", grace=0.0)
        self._after(ORPHAN_TIMEOUT, lambda: self._signal_qemu(signal.SIGTERM, QUIT_TIMEOUT))

    def _on_qemu_exit(self) -> None:
        assert self.qemu_pid is not None and self.pidfd is not None
        try:
            _, status = os.waitpid(self.qemu_pid, 0)
            self.status = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            self.status = 0
        self.sel.unregister(self.pidfd)

    def _main_exited(self, exit_body: bytes) -> None:
        """The box's main process ended: record how (``mainexit``) and stop the VM."""
        try:
            body = leanjson.loads(exit_body)
        except ValueError:
            body = None
        if isinstance(body, dict) and self.log_dir:
            try:
                mainexit.write(self.log_dir, body)
            except OSError as e:
                print(f"shim: cannot record the main process's exit: {e}", file=sys.stderr, flush=True)
        self.request_stop("the main process exited")

    # --- stopping -----------------------------------------------------------------------
    def request_stop(self, why: str, grace: float = SHUTDOWN_GRACE) -> None:
        """Ask the agent to shut down (box processes get ``grace`` seconds after SIGTERM);
        escalate to SIGTERM, then SIGKILL of QEMU."""
        if self.stopping:
            return
        self.stopping = True
        print(f"shim: stopping the VM ({why})", file=sys.stderr, flush=True)
        if self.paused and self.qmp is not None:  # a paused guest cannot shut down: let it run again
            try:
                self.qmp.execute("cont")
                self.paused = False
            except vmcontrol.QmpError as e:
                print(f"shim: cannot resume the paused VM to stop it: {e}", file=sys.stderr, flush=True)
        internal = Client(on_frame=lambda *_: None)
        self.relay.attach(internal)
        body = leanjson.dumps({"op": "shutdown", "grace": grace}).encode()
        self.relay.send(internal, p.REQUEST, 1, body)
        self._after(SHUTDOWN_TIMEOUT, lambda: self._signal_qemu(signal.SIGTERM, QUIT_TIMEOUT))
        if self.pidfd is None:
            self.status = 0

    def _signal_qemu(self, sig: int, then: float | None) -> None:
        if self.status is not None or self.pidfd is None:
            return
        try:
            signal.pidfd_send_signal(self.pidfd, sig)
        except OSError:
            return
        if then is not None:
            self._after(then, lambda: self._signal_qemu(signal.SIGKILL, None))

    def _after(self, delay: float, action: Callable[[], None]) -> None:
        self.timers.append((time.monotonic() + delay, action))

    def stop(self) -> None:
        """End :meth:`run` (tests; a real relay ends with QEMU)."""
        self.status = 0
        os.write(self.wake_fd, b"\0")

    # --- loop ---------------------------------------------------------------------------
    def run(self) -> int:
        while self.status is None:
            now = time.monotonic()
            for due in [t for t in self.timers if t[0] <= now]:
                self.timers.remove(due)
                due[1]()
            timeout = max(0.0, min(t[0] for t in self.timers) - now) if self.timers else None
            for key, _ in self.sel.select(timeout):
                if self.status is not None:
                    break
                key.data()
        for peer, _ in list(self.clients.values()):
            self._close(peer)
        return self.status


def log_opener(log_dir: str | None, logs: SharedLogs) -> Callable[[str, int], LogLease] | None:
    """Where detached executions append their output, capped and rotated (None: the guest keeps it)."""
    if log_dir is None:
        return None
    return lambda name, max_bytes: logs.open(os.path.join(log_dir, name), max_bytes)


def exec_relay(pkg_dir: str, args: dict[str, Any], fds: list[int]) -> None:
    """Replace the current process (the shim) with the relay; ``fds`` survive the exec.
    ``pkg_dir``: the boxlite package's directory."""
    for fd in fds:
        os.set_inheritable(fd, True)
    argv = [sys.executable, "-I", "-S", "-c", BOOTSTRAP, os.path.dirname(pkg_dir), leanjson.dumps(args)]
    os.execv(sys.executable, argv)


def main(arg: str) -> int:
    args = leanjson.loads(arg)
    guest = socket.socket(fileno=int(args["guest_fd"]))
    listener = socket.socket(fileno=int(args["listen_fd"]))
    for sock in (guest, listener):
        os.set_inheritable(sock.fileno(), False)
    lifeline = args.get("lifeline_fd")
    leftover = bytes.fromhex(args.get("leftover", ""))
    qmp = socket.socket(fileno=int(args["qmp_fd"])) if args.get("qmp_fd") is not None else None
    control = socket.socket(fileno=int(args["control_fd"])) if args.get("control_fd") is not None else None
    for extra in (qmp, control):
        if extra is not None:
            os.set_inheritable(extra.fileno(), False)
    resume = args.get("resume_state")
    server = RelayServer(
        guest, listener, int(args["qemu_pid"]), lifeline, leftover, args.get("log_dir"), qmp, control, resume
    )
    if args.get("console_fd") is not None:  # QEMU's console pipe, into the capped console log
        from .console import ConsoleLog

        console_fd, console = int(args["console_fd"]), ConsoleLog(str(args["console_path"]))
        os.set_inheritable(console_fd, False)

        def drain() -> None:
            if not console.pump(console_fd):
                server.sel.unregister(console_fd)

        server.sel.register(console_fd, selectors.EVENT_READ, drain)
    if args.get("hello") is not None:  # a box starting: the shim handed over before the agent answered
        ready_fd = args.get("ready_fd")
        if ready_fd is not None:
            os.set_inheritable(int(ready_fd), False)
        server.await_ready(ready_fd, str(args.get("ready_boot") or "{}"), args["hello"])
    signal.set_wakeup_fd(server.wake_fd, warn_on_full_buffer=False)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    status = server.run()
    listener.close()
    try:
        os.unlink(args["socket_path"])
    except OSError:
        pass
    print(f"shim: QEMU exited with status {status}", file=sys.stderr, flush=True)
    return 0 if status == 0 else 1
