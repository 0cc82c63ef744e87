"""``boxlite exec BOX CMD...`` without click, asyncio or the SDK: the common form, whole-process fast.

Importing the CLI and the runtime costs ~10x what the exec itself does. For the plain form
(no ``-i``/``-t``, only ``-e``/``-w``/``-u``/``-d``, a local home without a stored login, a *running* box named by
its full id or name, nothing for the runtime's crash recovery to do) this module reads the box's
record with one SQLite query, builds the same ``exec`` request as ``BoxRuntime.exec_body`` and
speaks the agent protocol (agent/protocol.py) over blocking sockets. Anything else returns
``None`` *before anything was sent to the box*, and the caller runs the full CLI, so behaviour
(errors, starting boxes, prefixes, sweeping dead boxes) stays that of the full path.

The agent is not trusted: frames are bounded by ``MAX_PAYLOAD`` (FrameReader), output must stay
within the credit granted, the exec must be answered within ``EXEC_TIMEOUT``.
"""

from __future__ import annotations

import _signal as signal  # the C modules: signal.py and socket.py build enums at import (~3 ms)
import _socket as socket
import os
import select
import sys
import time

from ..agent import leanjson
from ..agent import protocol as p
from .fdwrite import write_all
from .homepath import home_root

TYPE_CHECKING = False  # not from typing (~4 ms to import): this module exists to be quick
if TYPE_CHECKING:
    from typing import Any


def _load_sqlite() -> Any:
    """The ``_sqlite3`` C module (the ``sqlite3`` package adds datetime adapters, ~2 ms), loaded
    without the ``functools`` it imports for its statement cache (~4 ms with ``collections``):
    while it loads, ``functools`` is a stand-in whose ``lru_cache`` caches nothing (this process
    runs a handful of statements). ``_forget_sqlite`` drops it before the full CLI runs."""
    if "functools" in sys.modules:
        import _sqlite3

        return _sqlite3
    stand_in = type(sys)("functools")
    stand_in.lru_cache = lambda maxsize=128, typed=False: lambda function: function  # type: ignore[attr-defined]
    sys.modules["functools"] = stand_in
    try:
        import _sqlite3
    finally:
        if sys.modules.get("functools") is stand_in:
            del sys.modules["functools"]
    return _sqlite3


def _forget_sqlite() -> None:
    """Unload the ``_sqlite3`` of ``_load_sqlite`` (a multi-phase module: the next import gets
    a fresh one with the real ``functools.lru_cache``)."""
    if sys.modules.get("_sqlite3") is sqlite3 and "functools" not in sys.modules:
        del sys.modules["_sqlite3"]


if TYPE_CHECKING:
    import sqlite3
else:
    sqlite3 = _load_sqlite()

CONFIG_VERSION = 1
"""runtime/config.py's CONFIG_VERSION (a test keeps them equal): other versions take the full path."""
AGENT_SOCKET_NAME = "agent.sock"
"""layout.AGENT_SOCKET_NAME (a test keeps them equal)."""
EXEC_LOG_NAME = "exec.log"
"""layout.EXEC_LOG_NAME (a test keeps them equal)."""
CREDENTIALS_NAME = "credentials.toml"
"""cli/credentials.FILE_NAME (a test keeps them equal)."""
CONNECT_TIMEOUT = 10.0
EXEC_TIMEOUT = 60.0
OUTPUT_GRACE = 1.0
"""Seconds to keep draining output after the exit status, while it still flows (cli/attach.py)."""
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
EXIT_RUNTIME, EXIT_CANNOT_EXEC, EXIT_NOT_FOUND = 125, 126, 127
_LIVE = ("running", "stopping", "paused")


class _Fallback(Exception):
    """Not a case for the lean path: run the full CLI (nothing was sent to the box yet)."""


class _Broken(Exception):
    """The connection ended or the agent broke the protocol: exit status -1 with this reason."""


def parse(args: list[str]) -> tuple[str, list[str], list[tuple[str, str]], str | None, str | None, bool]:
    """(box, argv, env pairs, workdir, user, detach) of ``exec``'s arguments; ``_Fallback`` for
    any other form (``-i``, ``-t``, combined flags, unknown options, errors click reports)."""
    env: list[tuple[str, str]] = []
    workdir = user = None
    detach = False
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "-":
        if args[i] in ("-d", "--detach"):
            detach = True
            i += 1
            continue
        opt, sep, value = args[i].partition("=")
        if opt not in ("-e", "--env", "-w", "--workdir", "-u", "--user") or (sep and not opt.startswith("--")):
            raise _Fallback
        if not sep:
            if i + 1 >= len(args):
                raise _Fallback
            i += 1
            value = args[i]
        if opt in ("-e", "--env"):
            key, has, val = value.partition("=")
            if not key or "\0" in value:
                raise _Fallback  # the full path reports it
            if has:
                env.append((key, val))
            elif key in os.environ:
                env.append((key, os.environ[key]))
        elif opt in ("-w", "--workdir"):
            workdir = value
        else:
            user = value
        i += 1
    if i >= len(args):
        raise _Fallback
    box, argv = args[i], args[i + 1 :]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not box or not argv:
        raise _Fallback
    return box, argv, env, workdir, user, detach


def _alive(pid: Any, start: Any) -> bool:
    """(pid, start time) still names a live process (procfs.process_start_time's test)."""
    if type(pid) is not int or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read(4096)
    except OSError:
        return False
    fields = data[data.rfind(b")") + 2 :].split()
    return len(fields) >= 20 and fields[0] not in (b"Z", b"X") and fields[19].isdigit() and int(fields[19]) == start


def _home(home: str | None) -> str:
    root = home_root(home)
    # Home.resolve creates these and fixes their modes: only an already sound home is used here.
    for sub, mode in (("", 0o711), ("boxes", 0o700), ("images", 0o700), ("cache", 0o700)):
        try:
            st = os.stat(os.path.join(root, sub), follow_symlinks=False)
        except OSError:
            raise _Fallback from None
        if st.st_mode & 0o7777 != mode or st.st_mode & 0o170000 != 0o040000 or st.st_uid != os.geteuid():
            raise _Fallback
    return root


def resolve(db: sqlite3.Connection, ref: str) -> tuple[str, dict[str, Any]]:
    """The box ``ref`` (full id or name) if it is a running box the runtime would
    use as it is; ``_Fallback`` otherwise (also when crash recovery has work to do)."""
    rows = db.execute("SELECT id, state, engine, data FROM boxes WHERE id = ? OR name = ?", (ref, ref)).fetchall()
    if len(rows) != 1:
        raise _Fallback
    box_id, state, engine, text = rows[0]
    if state != "running" or engine not in ("namespace", "vm"):  # the VM relay serves the same socket
        raise _Fallback
    for (live,) in db.execute(f"SELECT data FROM boxes WHERE state IN {_LIVE}"):  # what sweep() would do
        try:
            other = leanjson.loads(live)
            alive = _alive(other.get("pid"), other.get("pid_start"))
            detach = other["config"]["detach"]
        except (ValueError, TypeError, KeyError, AttributeError):
            raise _Fallback from None
        if alive and not detach and not _alive(other.get("owner_pid"), other.get("owner_start")):
            raise _Fallback  # the runtime would kill it
        if not alive and not other.get("paused_to_disk"):
            raise _Fallback  # the runtime would mark it ended
    try:
        data = leanjson.loads(text)
        config, image = data["config"], data.get("image_config") or {}
        if not isinstance(config, dict) or not isinstance(image, dict):
            raise _Fallback
        if config.get("version") != CONFIG_VERSION or config.get("auto_pause"):
            raise _Fallback
        return box_id, data
    except (ValueError, TypeError, KeyError, AttributeError):
        raise _Fallback from None


def request_body(data: dict[str, Any], argv: list[str], env: list[tuple[str, str]], workdir: str | None,
                 user: str | None, detach: bool = False) -> dict[str, Any]:  # fmt: skip
    """BoxRuntime.exec_body for a plain (no tty, no stdin) CLI exec (``detach``: as
    Box.exec_detached's, output to the box's exec.log); ``_Fallback`` for a record the runtime's
    typed config would reject (it then reports it)."""
    config, image = data["config"], data.get("image_config") or {}
    full_env: dict[str, str] = {}
    try:
        for entry in image.get("env") or ():
            key, sep, value = entry.partition("=")
            if not sep or not key or "\0" in entry:
                raise _Fallback
            full_env[key] = value
        for key, value in config.get("env") or ():
            if not isinstance(key, str) or not isinstance(value, str):
                raise _Fallback
            full_env[key] = value
        rlimits = {str(k): int(v) for k, v in config.get("rlimits") or ()}
        defaults = (config.get("working_dir"), image.get("working_dir"), config.get("user"), image.get("user"))
    except (TypeError, ValueError, AttributeError):
        raise _Fallback from None
    if not all(v is None or isinstance(v, str) for v in defaults):
        raise _Fallback
    full_env.update(env)
    return {
        "op": "exec",
        "argv": argv,
        "env": full_env,
        "cwd": workdir or config.get("working_dir") or image.get("working_dir") or None,
        "user": user or config.get("user") or image.get("user") or None,
        **({"rlimits": rlimits} if rlimits else {}),
        "tty": False,
        "rows": 24,
        "cols": 80,
        "timeout": None,
        "stdin": False,
        **({"detach": True, "log": EXEC_LOG_NAME, "log_max": p.LOG_MAX} if detach else {}),
    }


def connect(path: str) -> socket.socket:
    """A blocking connection to the agent (``_Fallback`` if it does not accept: the full path
    then reports or repairs it)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)  # type: ignore[attr-defined]
    sock.settimeout(CONNECT_TIMEOUT)
    dir_fd = None
    try:
        target = path
        if len(path.encode()) > 100:  # sun_path is 108 bytes (client/agent_client.unix_address)
            dir_fd = os.open(os.path.dirname(path), os.O_PATH | os.O_CLOEXEC)
            target = f"/proc/self/fd/{dir_fd}/{os.path.basename(path)}"
        sock.connect(target)
    except OSError:
        sock.close()
        raise _Fallback from None
    finally:
        if dir_fd is not None:
            os.close(dir_fd)
    return sock


class Session:
    """One execution on channel 1: output to fds 1/2 with credit, signals forwarded."""

    def __init__(self, sock: socket.socket, label: str) -> None:
        self.sock, self.label = sock, label
        self.frames = p.FrameReader()
        self.credit = {p.STDOUT: p.DEFAULT_OUTPUT_WINDOW, p.STDERR: p.DEFAULT_OUTPUT_WINDOW}
        self.eof = {p.STDOUT: False, p.STDERR: False}
        self.broken = {1: False, 2: False}
        self.exit: dict[str, Any] | None = None
        self.interrupts = 0
        self.pending: list[int] = []

    def send(self, frame: bytes) -> None:
        try:
            self.sock.sendall(frame)
        except OSError:
            pass  # the read side reports the lost connection

    def recv(self, deadline: float | None, wake: int) -> list[tuple[int, int, bytes]]:
        """Frames that arrived (waits until ``deadline``, or a forwarded signal); [] on timeout."""
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([self.sock.fileno(), wake], [], [], timeout)
        if wake in ready:
            try:
                os.read(wake, 256)
            except BlockingIOError:
                pass
            self._signals()
        if self.sock.fileno() not in ready:
            return []
        try:
            data = self.sock.recv(1 << 18)
        except OSError:
            data = b""
        if not data:
            raise _Broken(f"the agent of {self.label} went away")
        self.frames.feed(data)
        try:
            return list(self.frames)
        except p.FrameError as e:
            raise _Broken(f"the agent of {self.label} broke the protocol ({e}): disconnected") from None

    def _signals(self) -> None:
        pending, self.pending = self.pending, []
        for sig in pending:
            if sig == signal.SIGINT:
                self.interrupts += 1
                if self.interrupts >= 3:
                    self.control({"op": "kill"})
                    continue
            self.control({"op": "signal", "signal": int(sig)})

    def control(self, body: dict[str, Any]) -> None:
        if self.exit is None:
            self.send(p.encode_json(p.CONTROL, 1, body))

    def output(self, kind: int, payload: bytes) -> None:
        if not payload:
            self.eof[kind] = True
            return
        if len(payload) > self.credit[kind]:
            name = "STDOUT" if kind == p.STDOUT else "STDERR"
            raise _Broken(
                f"the agent of {self.label} broke the protocol (sent {len(payload)} bytes of {name} with "
                f"{self.credit[kind]} bytes of credit): disconnected"
            )
        self.credit[kind] -= len(payload)
        fd = 1 if kind == p.STDOUT else 2
        if not self.broken[fd]:
            try:
                write_all(fd, payload)
            except BrokenPipeError:  # like a local pipeline: the writer gets SIGPIPE
                self.broken[fd] = True
                self.control({"op": "signal", "signal": int(signal.SIGPIPE)})
        self.credit[kind] += len(payload)  # consumed (or dropped): the agent may send as much again
        self.send(p.encode_credit(1, kind, len(payload)))


def error(message: str) -> None:
    line = " ".join(str(message).split("\n")[0].split()) if message else "unknown error"
    sys.stderr.write(f"boxlite: error: {line}\n")
    sys.stderr.flush()


def run(session: Session, body: dict[str, Any], wake: int, memory_mib: Any = None) -> int:
    """Send the exec, pump until the exit status; the CLI's exit code (the command's)."""
    session.send(p.encode_json(p.REQUEST, 1, body))
    deadline = time.monotonic() + EXEC_TIMEOUT
    started = False
    try:
        while session.exit is None or not all(session.eof.values()):
            if session.exit is not None:  # drain like attach.py: give up once output stops flowing
                frames = session.recv(time.monotonic() + OUTPUT_GRACE, wake)
                if not frames and not session.pending:
                    break
            else:
                frames = session.recv(None if started else deadline, wake)
                if not started and not frames and time.monotonic() >= deadline:
                    error(f"{session.label}: agent did not answer 'exec' within {EXEC_TIMEOUT}s")
                    return EXIT_RUNTIME
            for kind, channel, payload in frames:
                if channel != 1:
                    continue
                if kind == p.RESPONSE and not started:
                    reply = _json(payload, session.label)
                    if not reply.get("ok"):
                        return _exec_failed(reply, body["argv"])
                    if body.get("detach"):
                        return 0  # left running: nothing more comes on this channel
                    started = True
                elif kind in (p.STDOUT, p.STDERR):
                    session.output(kind, payload)
                elif kind == p.EXIT and session.exit is None:
                    session.exit = _json(payload, session.label)
    except _Broken as e:
        if session.exit is None:
            error(str(e))
            return EXIT_RUNTIME
    status = session.exit or {}
    code = status.get("exit_code")
    if type(code) is not int or code < 0:
        error("the box died while the command was running")
        return EXIT_RUNTIME
    if status.get("oom_killed"):
        limit = f" (limit {memory_mib} MiB)" if memory_mib else ""
        error(str(status.get("error_message") or f"killed: out of memory{limit}"))
    return code


def _json(payload: bytes, label: str) -> dict[str, Any]:
    try:
        return p.decode_json(payload)
    except p.FrameError as e:
        raise _Broken(f"the agent of {label} broke the protocol ({e}): disconnected") from None


def _exec_failed(reply: dict[str, Any], argv: list[str]) -> int:
    """What cli/errors.describe prints for the agent's refusal."""
    err = reply.get("error") or {}
    message = str(err.get("message", "agent error")) if isinstance(err, dict) else "agent error"
    if isinstance(err, dict) and err.get("type") == "ExecError":
        status = p.exec_failure_status(err.get("errno"), message)
        if not message.strip():
            import shlex

            message = f"Command '{shlex.join(argv)}' failed with exit code {status}: {message}"
        error(message.strip())
        return status if status in (EXIT_CANNOT_EXEC, EXIT_NOT_FOUND) else EXIT_CANNOT_EXEC
    error(message)
    return EXIT_RUNTIME


def _count(db: sqlite3.Connection, box_id: str, failed: bool) -> None:
    """The counters the full path saves for one exec (backends/local.py _save_counts)."""
    for name, amount in (("commands", 1), ("errors", int(failed))):
        if amount:
            db.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
                (f"box:{box_id}:{name}", amount, amount),
            )


def try_exec(args: list[str], home: str | None = None) -> int | None:
    """Run ``boxlite exec ARGS`` the lean way and return its exit code, or None: use the full CLI."""
    code = _lean_exec(args, home)
    if code is None:
        _forget_sqlite()
    return code


def _lean_exec(args: list[str], home: str | None) -> int | None:
    if os.environ.get("BOXLITE_FAST_EXEC") == "0":  # the full path, for comparisons
        return None
    if any(os.environ.get(k) for k in ("BOXLITE_REST_URL", "BOXLITE_RAY_ADDRESS", "BOXLITE_DEBUG", "BOXLITE_LOG")):
        return None
    try:
        ref, argv, env, workdir, user, detach = parse(args)
        if detach and os.environ.get("BOXLITE_LOG_MAX_BYTES"):
            raise _Fallback  # the log's cap as the full path reads it (client/limits.main_log_max)
        root = _home(home)
        if os.path.lexists(os.path.join(root, CREDENTIALS_NAME)):
            raise _Fallback  # a stored login may send the exec to a server (cli/common.apply_stored_login)
        db_path = os.path.join(root, "state.db")
        st = os.stat(db_path, follow_symlinks=False)
        if st.st_mode & 0o170000 != 0o100000 or st.st_mode & 0o077 or st.st_uid != os.geteuid():
            raise _Fallback  # sqlite_wal.make_private would fix it: let the full path
        db = sqlite3.connect(db_path, timeout=30.0, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=NORMAL")  # as runtime/state.py: no fsync per counter update
            box_id, data = resolve(db, ref)
            body = request_body(data, argv, env, workdir, user, detach)
            try:
                p.encode_json(p.REQUEST, 1, body)
            except p.FrameError:
                raise _Fallback from None  # too large for one request: the full path says so (ConfigError)
            run_dir = os.path.join(root, "boxes", box_id, "run")
            if os.path.lexists(os.path.join(run_dir, "main.exit")):
                raise _Fallback  # the main process ended: the full path reports it
            sock = connect(os.path.join(run_dir, AGENT_SOCKET_NAME))
        except sqlite3.Error:
            db.close()
            return None
        except _Fallback:
            db.close()
            raise
    except (_Fallback, OSError):
        return None
    try:
        code = _attached(sock, f"box {box_id}", body, data)
        try:
            _count(db, box_id, code != 0)
        except sqlite3.Error:
            pass
    finally:
        sock.close()
        db.close()
    return code


def _attached(sock: socket.socket, label: str, body: dict[str, Any], data: dict[str, Any]) -> int:
    session = Session(sock, label)
    sock.settimeout(None)
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    previous = {}
    old_wake = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    try:
        for sig in FORWARDED:
            previous[sig] = signal.signal(sig, lambda s, _f: session.pending.append(s))
        return run(session, body, r, data["config"].get("memory_mib"))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(old_wake)
        os.close(r)
        os.close(w)
