"""The agent's event loop: connections, executions, stream pumping and flow control.

Single-threaded on ``selectors``; stdlib only. One ``Agent`` serves any number of
connections (a listening unix socket) or one pre-connected stream (a VM's serial port).
"""

from __future__ import annotations

import errno
import functools
import gc
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable

from . import linux, mainexit, oom, tario, tunnel
from . import protocol as p
from .logfile import LogLease, SharedLogs, log_limit
from .spawn import Confinement, ExecSpec, Spawned, close_all, finish_parent, prepare_stdio, set_winsize, spawn
from .spawner import RequestTooLarge, SpawnerClient, start_spawner

TYPE_CHECKING = False  # not from typing (~2 ms to import into every box's agent)
if TYPE_CHECKING:
    from typing import Any

BUILTINS = {**tario.BUILTINS, **tunnel.BUILTINS}  # agent functions an exec may run (copy_in/out, tunnels)

Handler = Callable[[], None]
PR_SET_CHILD_SUBREAPER = 36
SENDABLE_SIGNALS = frozenset(int(s) for s in signal.valid_signals()) - {0}
"""Signals ``signal_main`` sends (any the kernel knows; 0 would only probe)."""
DETACHED_CHANNELS = 0xFFFF0000  # channel numbers of detached executions (never on the wire)
MAIN_EXIT_GRACE = 1.0  # seconds the box's other processes get (SIGTERM) once the main process ended
MAIN_OUTPUT_LINGER = 2.0  # seconds the main process's output may trail its exit (a background child keeps it open)
EOF_HOLD = 0.05
"""Seconds the end of an output stream of a running process waits for its EXIT: a process closes
its output as it exits, and ends plus EXIT in one write spare two VM exits per command (TCG)."""
MAX_SINKS = 256
"""Output pipes of ended executions still held by a background process (``sh -c 'server &'``)
that the agent keeps reading and discarding, so that process never gets SIGPIPE; beyond this
number a pipe is closed as before (one box cannot make its agent run out of descriptors)."""
SINK_READ = 65536
OUTPUTS = (p.STDOUT, p.STDERR)


class _Watch:
    """Interest of one fd in the selector."""

    __slots__ = ("on_read", "on_write", "registered", "want_read", "want_write")

    def __init__(self, on_read: Handler | None, on_write: Handler | None) -> None:
        self.on_read, self.on_write = on_read, on_write
        self.want_read = on_read is not None
        self.want_write = False
        self.registered = 0


_NO_WATCH = _Watch(None, None)


class Connection:
    """One host peer: frames in, frames out (bytes buffered while the peer is slow). Frames
    sent while the agent handles events are written together at the end of that round: an
    exec's end (end of stdout, of stderr, EXIT) is one write, which costs a VM exit under TCG."""

    def __init__(self, agent: Agent, rfd: int, wfd: int, owner: socket.socket | None = None) -> None:
        self.agent, self.rfd, self.wfd, self.owner = agent, rfd, wfd, owner
        self.reader = p.FrameReader()
        self.out = bytearray()
        self.execs: dict[int, Execution] = {}
        self.closed = False

    def send(self, frame: bytes) -> None:
        if self.closed:
            return
        if self.agent.batching:  # written once this round of the event loop is over
            self.out += frame
            self.agent.dirty.add(self)
            return
        if not self.out:
            try:
                n = os.write(self.wfd, frame)
            except BlockingIOError:
                n = 0
            except OSError:
                self.agent.drop(self)
                return
            if n == len(frame):
                return
            frame = frame[n:]
        self.out += frame
        self.agent.want_write(self.wfd, True)

    def flush(self) -> None:
        """Write what this round of the event loop queued (one write for all its frames)."""
        if self.closed or not self.out or self.agent.watches.get(self.wfd, _NO_WATCH).want_write:
            return  # nothing to do, or waiting for the peer already (``on_writable`` goes on)
        try:
            n = os.write(self.wfd, self.out[: 1 << 20])
        except BlockingIOError:
            n = 0
        except OSError:
            self.agent.drop(self)
            return
        del self.out[:n]
        if self.out:
            self.agent.want_write(self.wfd, True)

    def on_writable(self) -> None:
        try:
            n = os.write(self.wfd, self.out[: 1 << 20])
        except BlockingIOError:
            return
        except OSError:
            self.agent.drop(self)
            return
        del self.out[:n]
        if not self.out:
            self.agent.want_write(self.wfd, False)

    def on_readable(self) -> None:
        try:
            data = os.read(self.rfd, p.CHUNK)  # not more: see spawner.MAX_REPLY
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.agent.drop(self)
            return
        self.reader.feed(data)
        try:
            for kind, channel, payload in self.reader:
                self.agent.dispatch(self, kind, channel, payload)
        except p.FrameError:
            self.agent.drop(self)

    def flush_blocking(self, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        while self.out and not self.closed and time.monotonic() < deadline:
            try:
                n = os.write(self.wfd, self.out)
                del self.out[:n]
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:
                return


class Execution:
    """One running process and its streams, bound to the connection that started it."""

    def __init__(self, conn: Connection, channel: int, proc: Spawned, window: int, timeout: float | None) -> None:
        self.conn, self.channel, self.proc = conn, channel, proc
        self.credit = {p.STDOUT: window, p.STDERR: window}
        self.out_fds: dict[int, int] = {}
        if proc.stdout is not None:
            self.out_fds[p.STDOUT] = proc.stdout
        if proc.stderr is not None:
            self.out_fds[p.STDERR] = proc.stderr
        self.stdin_fd = proc.stdin
        self.stdin_buf = bytearray()
        self.stdin_eof = False
        self.status: tuple[int, int | None] | None = None
        self.timed_out = False
        self.started = time.monotonic()
        self.deadline = self.started + timeout if timeout else None
        self.held: list[int] = []  # output streams that ended while the process ran (EOF_HOLD)
        self.hold_until = 0.0
        self.main = False  # the box's main process: its end (exit and end of output) ends the box
        self.oom_kills: int | None = None  # the box's OOM-kill count when it started
        self.report: dict[str, Any] | None = None  # the EXIT body, once sent


class _Detached(Connection):
    """Owner of detached executions (the box's main process, ``exec -d``): their output goes to a
    log file capped and rotated by ``RotatingLog`` (one per file: ``SharedLogs``) instead of a
    peer. Credit for what was written is granted back between two rounds of the event loop
    (``settle``): a process printing without end gets the agent in turns with everything else,
    and its log stays within the cap."""

    def __init__(self, agent: Agent) -> None:
        super().__init__(agent, -1, -1)
        self.logs: dict[int, LogLease] = {}
        self.shared = SharedLogs()  # detached executions naming one log share it and its cap
        self.owed: list[tuple[int, int, int]] = []  # (channel, stream, bytes written)

    def open_log(self, channel: int, path: str, max_bytes: object) -> None:
        self.logs[channel] = self.shared.open(path, log_limit(max_bytes))

    def close_log(self, channel: int) -> None:
        log = self.logs.pop(channel, None)
        if log is not None:
            log.close()

    def send(self, frame: bytes) -> None:
        length, kind, channel = p.HEADER.unpack_from(frame)
        log = self.logs.get(channel)
        if log is None or kind not in OUTPUTS:
            return
        if length:
            try:
                log.write(memoryview(frame)[p.HEADER_SIZE :])
            except OSError:  # a full disk drops output: the process is not blocked on it
                pass
            self.owed.append((channel, kind, length))
            return
        ex = self.execs.get(channel)
        if ex is None or not ex.out_fds:  # end of its last output stream
            self.close_log(channel)

    def settle(self) -> None:
        """Grant the credit for what was written to the logs (and so pump them once more)."""
        owed, self.owed = self.owed, []
        for channel, stream, amount in owed:
            ex = self.execs.get(channel)
            if ex is not None and stream in ex.credit:
                ex.credit[stream] += amount
                self.agent._pump(ex, stream)


def set_clock(value: object) -> None:
    """A VM resumed from a saved memory (pause to disk, fork) wakes with the clock of the moment
    it was saved: the host's shim sends its time with ``hello``. Only the guest's agent may set
    the clock; a namespace box's agent (a user namespace) gets EPERM, which is ignored."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        try:
            time.clock_settime_ns(time.CLOCK_REALTIME, value)
        except OSError:
            pass


def fork_spawner(conf: Confinement, go: int | None = None, netns: int | None = None) -> SpawnerClient:
    """:func:`spawner.start_spawner` with the forking process's objects frozen first, so that
    they stay shared with the spawner (no copy-on-write by gc)."""
    gc.freeze()
    return start_spawner(conf, go, netns)


class Agent:
    """The supervisor of one box."""

    def __init__(self, confinement: Confinement, lifeline_fd: int | None = None, log_dir: str | None = None) -> None:
        self.conf = confinement
        self.log_dir = log_dir
        self.before_exit_report: Handler | None = None
        """Called before each EXIT frame is sent (a VM whose disk outlives it flushes it there)."""
        self.sync_disk: Handler | None = None
        """Flushes the box's disk for the ``sync`` request (a VM's: its page cache dies with it)."""
        self.oom_counter: int | None = None
        """fd of the box memory cgroup's OOM-kill counter (see ``oom.py``), if there is one."""
        self.main_linger: tuple[float, Execution] | None = None
        """(deadline, main execution) whose exit was seen while its output is still open."""
        self.detached = _Detached(self)
        self.sel = selectors.DefaultSelector()
        self.watches: dict[int, _Watch] = {}
        self.connections: list[Connection] = []
        self.by_pid: dict[int, Execution] = {}
        self.holding: set[Execution] = set()
        """Executions whose ended output streams wait for their EXIT (at most ``EOF_HOLD``)."""
        self.sinks: set[int] = set()
        """Read ends of ended executions' output pipes that background processes still write to."""
        self.sync_on_shutdown = True
        """``sync()`` before leaving: a VM's page cache dies with the guest. A namespace box's
        writes are in the host's page cache, where they stay; there, sync(2) would flush every
        file system of the host and make each box's stop wait for it."""
        self.running = True
        self.batching = False
        """True while events are handled: ``Connection.send`` queues, ``flush_all`` writes."""
        self.dirty: set[Connection] = set()
        self.started = time.monotonic()
        self.listener: socket.socket | None = None
        self.spawner: SpawnerClient | None = None
        self.spawner_idle: float | None = None
        """Seconds without a command after which the spawner is retired (None: never); the next
        command forks a new one. An idle namespace box then costs one process less (~1.4 MiB of
        private memory, docs/performance.md); a VM keeps its spawner (a fork under TCG is slow,
        and the guest's freed pages would not return to the host anyway)."""
        self.spawner_pids: set[int] = set()
        """Processes the spawner started that have not exited (it is never retired under them)."""
        self.spawner_used = 0.0
        self.spawner_retired = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        self.watch(self._wake_r, self._reap)
        if lifeline_fd is not None:
            os.set_blocking(lifeline_fd, False)
            self.watch(lifeline_fd, lambda: self._lifeline(lifeline_fd))

    # --- selector bookkeeping -------------------------------------------------------------
    def watch(self, fd: int, on_read: Handler | None, on_write: Handler | None = None) -> None:
        self.watches[fd] = _Watch(on_read, on_write)
        self._apply(fd)

    def unwatch(self, fd: int) -> None:
        w = self.watches.pop(fd, None)
        if w is not None and w.registered:
            self.sel.unregister(fd)

    def want_read(self, fd: int, on: bool) -> None:
        w = self.watches.get(fd)
        if w is not None and w.want_read != on:
            w.want_read = on
            self._apply(fd)

    def want_write(self, fd: int, on: bool) -> None:
        w = self.watches.get(fd)
        if w is not None and w.want_write != on:
            w.want_write = on
            self._apply(fd)

    def _apply(self, fd: int) -> None:
        w = self.watches[fd]
        events = (selectors.EVENT_READ if w.want_read else 0) | (selectors.EVENT_WRITE if w.want_write else 0)
        if events == w.registered:
            return
        if not events:
            self.sel.unregister(fd)
        elif not w.registered:
            self.sel.register(fd, events)
        else:
            self.sel.modify(fd, events)
        w.registered = events

    # --- serving ------------------------------------------------------------------------
    def start_spawner(self, forked: SpawnerClient | None = None) -> None:
        """Fork the pre-confined spawner (see ``spawner.py``), or use ``forked``, one forked
        earlier by :func:`fork_spawner`; call once the box root is ready. The agent becomes a
        subreaper so that the spawner's processes fall to it if it dies."""
        linux.prctl(PR_SET_CHILD_SUBREAPER, 1)
        self.spawner = forked or fork_spawner(self.conf)
        self.spawner_used, self.spawner_retired = time.monotonic(), False
        self.watch(self.spawner.fileno(), self._spawner_exits)

    def _lose_spawner(self) -> None:
        """Stop using the spawner (it closes when its socket does; _reap reaps it). Processes
        it started fall to the agent, a subreaper, which reaps them itself."""
        if self.spawner is not None:
            self.unwatch(self.spawner.fileno())
            self.spawner.close()
            self.spawner = None
        self.spawner_pids.clear()

    def _spawner_retires_at(self) -> float | None:
        if self.spawner is None or self.spawner_idle is None or self.spawner_pids:
            return None
        return self.spawner_used + self.spawner_idle

    def _retire_spawner(self) -> None:
        self._lose_spawner()
        self.spawner_retired = True

    def _spawner_exits(self) -> None:
        if self.spawner is None:
            return
        exits = self.spawner.read_exits()
        if exits is None:
            print("agent: the spawner exited; spawning directly", file=sys.stderr, flush=True)
            self._lose_spawner()
            return
        self.spawner_used = time.monotonic()
        for pid, code in exits:
            self.spawner_pids.discard(pid)
            ex = self.by_pid.pop(pid, None)
            if ex is not None:
                self._exited(ex, (-code) & 0x7F if code < 0 else (code & 0xFF) << 8)

    def _spawn(self, spec: ExecSpec, builtin: Callable[[ExecSpec], int] | None) -> Spawned:
        """Through the spawner when there is one (builtins run our code: never there); a
        retired one is forked again."""
        if builtin is None and self.spawner is None and self.spawner_retired:
            try:
                self.start_spawner()
            except OSError:  # e.g. the pids limit is reached: the direct path reports it
                pass
        if builtin is not None or self.spawner is None:
            return spawn(spec, self.conf, builtin)
        if self.batching:  # answers queued so far need not wait for this spawn
            self.flush_all()
            self.batching = True
        child_fds, parent, master = prepare_stdio(spec, self.conf.root)
        try:
            pid = self.spawner.start(spec, list(child_fds))
        except ConnectionError:
            close_all((*child_fds, *parent))
            self._lose_spawner()
            return spawn(spec, self.conf, builtin)
        except RequestTooLarge:
            close_all((*child_fds, *parent))
            return spawn(spec, self.conf, builtin)
        except BaseException:
            close_all((*child_fds, *parent))
            raise
        finish_parent(child_fds, parent)
        self.spawner_pids.add(pid)
        self.spawner_used = time.monotonic()
        return Spawned(pid=pid, stdin=parent[0], stdout=parent[1], stderr=parent[2], master=master)

    def listen(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.listener = sock
        self.watch(sock.fileno(), self._accept)

    def attach_stream(self, rfd: int, wfd: int) -> Connection:
        """Serve one pre-connected stream (e.g. a virtio-serial port)."""
        for fd in {rfd, wfd}:
            os.set_blocking(fd, False)
        conn = Connection(self, rfd, wfd)
        self.connections.append(conn)
        if rfd == wfd:
            self.watch(rfd, conn.on_readable, conn.on_writable)
        else:
            self.watch(rfd, conn.on_readable)
            self.watch(wfd, None, conn.on_writable)
        return conn

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            sock, _ = self.listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        conn = Connection(self, sock.fileno(), sock.fileno(), owner=sock)
        self.connections.append(conn)
        self.watch(sock.fileno(), conn.on_readable, conn.on_writable)

    def serve_forever(self) -> None:
        while self.running:
            timeout = self._next_deadline()
            events = self.sel.select(timeout)
            self.batching = True
            try:
                for key, mask in events:
                    w = self.watches.get(key.fd)
                    if w is None:
                        continue
                    try:
                        if mask & selectors.EVENT_READ and w.on_read is not None and w.want_read:
                            w.on_read()
                        if mask & selectors.EVENT_WRITE and w.on_write is not None and key.fd in self.watches:
                            w.on_write()
                    except Exception:  # a bug must not take the whole box down: log it, keep serving
                        import traceback  # only when something failed: not at every agent start

                        traceback.print_exc()
                        sys.stderr.flush()
                self._enforce_deadlines()
                self.detached.settle()
            finally:
                self.flush_all()

    def flush_all(self) -> None:
        """End a round of the event loop: write the frames it queued."""
        self.batching = False
        dirty, self.dirty = self.dirty, set()
        for conn in dirty:
            conn.flush()

    def drop(self, conn: Connection) -> None:
        """Forget a connection; its still-running executions are killed."""
        if conn.closed:
            return
        conn.closed = True
        for ex in list(conn.execs.values()):
            self._kill_group(ex, signal.SIGKILL)
            self._close_exec_fds(ex)
            self.holding.discard(ex)
        conn.execs.clear()
        for fd in {conn.rfd, conn.wfd}:
            self.unwatch(fd)
        if conn.owner is not None:
            conn.owner.close()
        if conn in self.connections:
            self.connections.remove(conn)

    # --- frames -------------------------------------------------------------------------
    def dispatch(self, conn: Connection, kind: int, channel: int, payload: bytes) -> None:
        if kind == p.REQUEST:
            self._request(conn, channel, p.decode_json(payload))
            return
        ex = conn.execs.get(channel)
        if ex is None:
            return  # late frame for a finished execution
        if kind == p.STDIN:
            self._stdin(ex, payload)
        elif kind == p.CREDIT:
            stream, amount = p.decode_credit(payload)
            if stream in ex.credit:
                ex.credit[stream] += amount
                self._pump(ex, stream)
        elif kind == p.CONTROL:
            self._control(ex, p.decode_json(payload))

    def _request(self, conn: Connection, channel: int, body: dict[str, Any]) -> None:
        op = body.get("op")
        try:
            if op == "exec":
                result = self._exec(conn, channel, body)
            elif op == "hello":
                set_clock(body.get("time_ns"))
                result = {"version": p.VERSION, "pid": os.getpid()}
            elif op == "ping":
                result = {}
            elif op == "sync":
                if self.sync_disk is not None:
                    self.sync_disk()
                result = {}
            elif op == "stats":
                result = self._stats()
            elif op == "signal_main":
                result = self._signal_main(body.get("signal"))
            elif op == "shutdown":  # answered once every box process is gone and the disk synced:
                # the host may kill the VM from then on; no sync for a disk the host discards
                self.shutdown(float(body.get("grace", 5.0)), sync=body.get("sync") is not False)
                conn.send(p.encode_json(p.RESPONSE, channel, {"ok": True}))
                conn.flush_blocking()
                return
            else:
                conn.send(p.encode_json(p.RESPONSE, channel, p.error_body("RpcError", f"unknown op {op!r}")))
                return
        except OSError as e:
            kind = "ExecError" if op == "exec" else "EngineError"
            conn.send(p.encode_json(p.RESPONSE, channel, p.error_body(kind, e.strerror or str(e), e.errno)))
            return
        except (ValueError, TypeError, KeyError) as e:
            conn.send(p.encode_json(p.RESPONSE, channel, p.error_body("ConfigError", str(e))))
            return
        conn.send(p.encode_json(p.RESPONSE, channel, {"ok": True, **result}))
        if op == "exec" and channel in conn.execs and p.STDERR not in conn.execs[channel].out_fds:
            conn.send(p.encode(p.STDERR, channel, b""))  # a PTY merges stderr into stdout: end it now
        if self.spawner is not None and self.spawner.exits:  # read while awaiting a spawn reply
            self._spawner_exits()

    def _exec(self, conn: Connection, channel: int, body: dict[str, Any]) -> dict[str, Any]:
        spec = ExecSpec.from_request(body)
        if body.get("detach"):  # survives the connection; output goes to <log_dir>/<log>
            if not self.log_dir:
                raise ValueError("this agent has no log directory for detached executions")
            name = os.path.basename(str(body.get("log") or "main.log"))
            spec.log_path = os.path.join(self.log_dir, name)
            spec.tty = False
            conn, channel = self.detached, DETACHED_CHANNELS
            while channel in conn.execs:
                channel += 1
            self.detached.open_log(channel, spec.log_path, body.get("log_max"))
        if channel in conn.execs:
            raise ValueError(f"channel {channel} is busy")
        builtin = None
        if spec.builtin is not None:
            if spec.builtin not in BUILTINS:
                raise ValueError(f"unknown builtin {spec.builtin!r}")
            builtin = BUILTINS[spec.builtin]
        try:
            proc = self._spawn(spec, builtin)
        except BaseException:
            if conn is self.detached:
                self.detached.close_log(channel)
            raise
        window = int(body.get("window") or p.DEFAULT_OUTPUT_WINDOW)
        timeout = body.get("timeout")
        ex = Execution(conn, channel, proc, window, float(timeout) if timeout else None)
        ex.main = bool(body.get("main"))
        ex.oom_kills = oom.read_kills(self.oom_counter)
        conn.execs[channel] = ex
        self.by_pid[proc.pid] = ex
        if proc.master is not None:
            self.watch(proc.master, lambda: self._pump(ex, p.STDOUT), lambda: self._write_stdin(ex))
        else:
            for stream, fd in ex.out_fds.items():
                self.watch(fd, functools.partial(self._pump, ex, stream))
            if proc.stdin is not None:
                self.watch(proc.stdin, None, lambda: self._write_stdin(ex))
        if body.get("stdin") is False:
            self._stdin(ex, b"")
        return {"pid": proc.pid}

    def _stats(self) -> dict[str, Any]:
        procs = sum(1 for name in os.listdir("/proc") if name.isdigit()) if os.path.isdir("/proc") else 0
        return {"uptime": time.monotonic() - self.started, "execs": len(self.by_pid), "processes": procs,
                "net": _net_dev()}  # fmt: skip

    # --- streams ------------------------------------------------------------------------
    def _pump(self, ex: Execution, stream: int) -> None:
        fd = ex.out_fds.get(stream)
        if fd is None:
            return
        while ex.credit[stream] > 0:
            try:
                data = os.read(fd, min(ex.credit[stream], p.CHUNK))
            except BlockingIOError:
                if ex.status is not None:  # drained, but a background process still holds the pipe
                    self._close_stream(ex, stream, keep_writers=True)
                else:
                    self.want_read(fd, True)
                return
            except OSError as e:
                if e.errno != errno.EIO:  # EIO: pty whose slave side is closed
                    raise
                data = b""
            if not data:
                self._close_stream(ex, stream)
                return
            ex.credit[stream] -= len(data)
            ex.conn.send(p.encode(stream, ex.channel, data))
        self.want_read(fd, False)

    def _close_stream(self, ex: Execution, stream: int, keep_writers: bool = False) -> None:
        """End ``stream`` for the host. ``keep_writers``: the process exited but a background
        child of it still holds the pipe: its later writes are discarded, not refused (EPIPE)."""
        fd = ex.out_fds.pop(stream)
        if ex.proc.master == fd:
            self.want_read(fd, False)
        elif keep_writers and len(self.sinks) < MAX_SINKS and fd not in ex.out_fds.values():
            self.unwatch(fd)
            self.sinks.add(fd)
            self.watch(fd, lambda: self._discard(fd))
        else:
            self.unwatch(fd)
            os.close(fd)
        if ex.status is None and ex.conn is not self.detached and ex.proc.master is None:
            if not ex.held:
                ex.hold_until = time.monotonic() + EOF_HOLD
                self.holding.add(ex)
            ex.held.append(stream)
        else:
            ex.conn.send(p.encode(stream, ex.channel, b""))
        self._maybe_finish(ex)

    def _release_ends(self, ex: Execution) -> None:
        """Send the held ends of ``ex``'s output streams."""
        for stream in ex.held:
            ex.conn.send(p.encode(stream, ex.channel, b""))
        ex.held.clear()
        self.holding.discard(ex)

    def _discard(self, fd: int) -> None:
        """Read and drop what a background process writes to its ended exec's output."""
        try:
            if os.read(fd, SINK_READ):
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        self.unwatch(fd)  # every writer is gone
        self.sinks.discard(fd)
        os.close(fd)

    def _stdin(self, ex: Execution, data: bytes) -> None:
        if ex.stdin_fd is None:
            ex.conn.send(p.encode_credit(ex.channel, p.STDIN, len(data)))
            return
        if data:
            ex.stdin_buf += data
        else:
            ex.stdin_eof = True
        self._write_stdin(ex)

    def _write_stdin(self, ex: Execution) -> None:
        fd = ex.stdin_fd
        if fd is None:
            return
        written = 0
        try:
            while ex.stdin_buf:
                n = os.write(fd, ex.stdin_buf[: p.CHUNK])
                del ex.stdin_buf[:n]
                written += n
        except BlockingIOError:
            pass
        except OSError:  # EPIPE/EIO: the reader is gone; discard what is pending
            written += len(ex.stdin_buf)
            ex.stdin_buf.clear()
            ex.stdin_eof = True
        if written:
            ex.conn.send(p.encode_credit(ex.channel, p.STDIN, written))
        if ex.stdin_buf:
            self.want_write(fd, True)
            return
        self.want_write(fd, False)
        if ex.stdin_eof:
            if ex.proc.master == fd:
                if ex.status is None:
                    try:
                        os.write(fd, b"\x04")
                    except OSError:
                        pass
            else:
                self.unwatch(fd)
                os.close(fd)
            ex.stdin_fd = None

    # --- control, exit ------------------------------------------------------------------
    def _control(self, ex: Execution, body: dict[str, Any]) -> None:
        op = body.get("op")
        if op == "kill":
            self._kill_group(ex, signal.SIGKILL)
        elif op == "signal":
            try:
                os.kill(ex.proc.pid, int(body["signal"]))
            except (ProcessLookupError, ValueError, KeyError):
                pass
        elif op == "resize" and ex.proc.master is not None:
            set_winsize(ex.proc.master, int(body["rows"]), int(body["cols"]))
            try:
                os.killpg(ex.proc.pid, signal.SIGWINCH)
            except ProcessLookupError:
                pass

    def _signal_main(self, sig: object) -> dict[str, Any]:
        """``boxlite kill -s SIG``: the signal to the box's main process itself (as docker's to a
        container's PID 1); ``sent`` false when no main process runs."""
        if not isinstance(sig, int) or isinstance(sig, bool) or sig not in SENDABLE_SIGNALS:
            raise ValueError(f"signal must be a signal number 1-{max(SENDABLE_SIGNALS)}, not {sig!r}")
        for ex in self.by_pid.values():
            if ex.main and ex.status is None:
                try:
                    os.kill(ex.proc.pid, sig)
                except ProcessLookupError:
                    break
                return {"sent": True, "pid": ex.proc.pid}
        return {"sent": False}

    def _kill_group(self, ex: Execution, sig: int) -> None:
        """``sig`` once to each process of the execution's group (it leads its own session), or
        to its process alone when the group is gone. Once: a shell already running its TERM trap
        runs it again for a second SIGTERM."""
        try:
            os.killpg(ex.proc.pid, sig)
            return
        except (ProcessLookupError, PermissionError):
            pass
        try:
            os.kill(ex.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _reap(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            ex = self.by_pid.pop(pid, None)
            if ex is not None:
                self._exited(ex, status)

    def _exited(self, ex: Execution, status: int) -> None:
        """``ex``'s process ended with wait status ``status``: report it."""
        ex.status = p.exit_status(status)
        for stream in list(ex.out_fds):
            self._pump(ex, stream)
        self._release_ends(ex)
        code, sig = ex.status
        body = {
            "exit_code": code,
            "signal": sig,
            "timed_out": ex.timed_out,
            "duration_ms": round((time.monotonic() - ex.started) * 1000, 3),
        }
        if sig == signal.SIGKILL and not ex.timed_out and ex.oom_kills is not None:
            kills = oom.read_kills(self.oom_counter)
            body["oom_killed"] = kills is not None and kills > ex.oom_kills
        if self.before_exit_report is not None:
            self.before_exit_report()
        # Output the host has not made room for yet may follow the EXIT frame.
        ex.conn.send(p.encode_json(p.EXIT, ex.channel, body))
        ex.report = body
        self._maybe_finish(ex)
        if ex.main and ex.out_fds:  # a background child holds its output open: not for long
            self.main_linger = (time.monotonic() + MAIN_OUTPUT_LINGER, ex)
        elif ex.main and ex.conn is self.detached:  # its output ended already (maybe in the pump above)
            self._main_ended(body)

    def _maybe_finish(self, ex: Execution) -> None:
        """Forget an execution once it exited and its output streams are closed."""
        if ex.status is None or ex.out_fds:
            return
        if ex.conn.execs.pop(ex.channel, None) is not None:
            self._close_exec_fds(ex)
            if ex.main and ex.report is not None and ex.conn is self.detached:
                self._main_ended(ex.report)

    def _main_ended(self, report: dict[str, Any]) -> None:
        """The box's main process exited and its output is logged: record how it ended in
        ``<log_dir>/main.exit`` for the host, and end the box (as docker does)."""
        if self.running and self.log_dir:  # once: shutdown() clears ``running``
            mainexit.write(self.log_dir, report)
            self.shutdown(MAIN_EXIT_GRACE)

    def _close_exec_fds(self, ex: Execution) -> None:
        fds = set(ex.out_fds.values())
        for fd in (ex.stdin_fd, ex.proc.master):
            if fd is not None:
                fds.add(fd)
        for fd in fds:
            self.unwatch(fd)
            try:
                os.close(fd)
            except OSError:
                pass
        ex.out_fds.clear()
        ex.stdin_fd = None
        ex.proc.master = None

    def _next_deadline(self) -> float | None:
        if self.detached.owed:
            return 0.0
        deadlines = [ex.deadline for ex in self.by_pid.values() if ex.deadline and not ex.timed_out]
        if self.main_linger is not None:
            deadlines.append(self.main_linger[0])
        deadlines += [ex.hold_until for ex in self.holding]
        retire = self._spawner_retires_at()
        if retire is not None:
            deadlines.append(retire)
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for ex in [ex for ex in self.holding if now >= ex.hold_until]:
            self._release_ends(ex)
        if self.main_linger is not None and now >= self.main_linger[0]:
            ex, self.main_linger = self.main_linger[1], None
            for stream in list(ex.out_fds):  # the main process's output ends with it (after the linger)
                self._close_stream(ex, stream)
        for ex in list(self.by_pid.values()):
            if ex.deadline and not ex.timed_out and now >= ex.deadline:
                ex.timed_out = True
                self._kill_group(ex, signal.SIGKILL)
        retire = self._spawner_retires_at()
        if retire is not None and now >= retire:
            self._retire_spawner()

    # --- lifecycle ----------------------------------------------------------------------
    def _lifeline(self, fd: int) -> None:
        if not p.lifeline_closed(fd):
            return
        self.unwatch(fd)
        self.shutdown(0.0)

    def shutdown(self, grace: float, sync: bool = True) -> None:
        """Terminate every process of the box, then leave ``serve_forever``. No grace: SIGKILL
        alone, as a namespace box's processes get it when its PID 1 dies (a SIGTERM just before
        would let a handler run in between, or not). Then flush the disks (a VM's), unless
        ``sync`` is false: the host deletes the box's disk right after."""
        self.running = False
        if grace > 0:
            self._signal_all(signal.SIGTERM)
            started = time.monotonic()
            while (waited := time.monotonic() - started) < grace and self._children_left():
                time.sleep(0.001 if waited < 0.05 else 0.01)  # most processes end within a few ms of SIGTERM
        self._signal_all(signal.SIGKILL)
        if self.sync_on_shutdown and sync:
            os.sync()

    def _signal_all(self, sig: int) -> None:
        """``sig`` once to every process of the box: as PID 1 of its pid namespace (both engines)
        ``kill(-1)`` reaches them all, executions and their escaped children alike, and a second
        signal per execution would run a TERM trap twice (past the grace)."""
        if os.getpid() == 1:
            try:
                os.kill(-1, sig)
            except ProcessLookupError:
                pass
            return
        for ex in list(self.by_pid.values()):
            self._kill_group(ex, sig)

    def _children_left(self) -> bool:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        return True if pid == 0 else self._children_left()


def _net_dev() -> list[int]:
    """[bytes sent, bytes received, packets sent, packets received] of the box's interfaces but
    loopback (what the VM engine reports as the box's network counters; its guest's own count)."""
    totals = [0, 0, 0, 0]
    try:
        with open("/proc/net/dev", "rb") as f:
            lines = f.read(65536).decode("ascii", "replace").splitlines()[2:]
    except OSError:
        return totals
    for line in lines:
        name, _, rest = line.partition(":")
        fields = rest.split()
        if name.strip() == "lo" or len(fields) < 10:
            continue
        try:
            for i, col in enumerate((8, 0, 9, 1)):
                totals[i] += int(fields[col])
        except ValueError:
            continue
    return totals
