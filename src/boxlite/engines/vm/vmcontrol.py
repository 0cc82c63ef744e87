"""Pause, resume and save a running VM box: the host asks its relay (``relayd``) over a control
socket in the run dir; the relay drives QEMU over the QMP connection the shim handed it.

Stdlib only (the relay imports it). The control socket (``run/vm-control.sock``, mode 0600,
root's) is bound by the shim before it confines itself; the guest cannot reach it. One request
per connection: a JSON line ``{"op": ...}`` in, a JSON line ``{"ok": true, ...}`` or
``{"ok": false, "error": ...}`` out. Requests and answers are capped at ``MAX_LINE`` bytes and
every QMP exchange has a deadline, so a wedged QEMU cannot hang the relay for long.
"""

from __future__ import annotations

import os
import socket
import time

from ...agent import leanjson

CONTROL_SOCKET_NAME = "vm-control.sock"
MAX_LINE = 4096
QMP_TIMEOUT = 5.0
SAVE_TIMEOUT = 300.0
"""Longest a RAM save to disk may take (a 4 GiB guest under a loaded host)."""
OPS = ("stop", "cont", "status", "save", "snapshot", "relaystate", "send")
"""``relaystate`` writes ``FORK_RELAY_NAME`` only; ``send`` streams the stopped guest into the
pipe passed with the request (SCM_RIGHTS): a fork's one copy loads it as it is written."""
SAVE_FD_NAME = "boxlite-save"
UNTHROTTLED = 1 << 40
"""Bytes/s for a save (QMP max-bandwidth): QEMU's default throttle, meant for live migration over a
network, doubled the time a stopped guest took to write its RAM to a local file (fork, pause to disk)."""
SAVED_STATE_NAME = "vm-saved.state"
"""In the run dir: the guest saved by ``save`` (RAM + devices), restored by ``VmEngine.restore``."""
RELAY_STATE_NAME = "vm-saved.relay.json"
"""In the run dir: the relay's detached executions and next channel, for the relay that resumes."""
FORK_STATE_NAME = "vm-fork.state"
"""In the run dir: the stopped guest saved by ``snapshot`` (the VM stays, stopped) for forks."""
FORK_RELAY_NAME = "vm-fork.relay.json"


class QmpError(Exception):
    pass


class Qmp:
    """Blocking QMP over an already negotiated connection (the shim ran ``qmp_capabilities``).
    Events arriving in between are dropped (:meth:`drain`)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def drain(self) -> bool:
        """Read and drop what QEMU sent unasked (events); False once QEMU closed the monitor."""
        try:
            data = self.sock.recv(1 << 16, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        self.buf = (self.buf + data)[-(1 << 16) :]
        self.buf = self.buf[self.buf.rfind(b"\n") + 1 :]
        return True

    def execute(
        self, command: str, arguments: dict[str, object] | None = None, timeout: float = QMP_TIMEOUT, fd: int = -1
    ) -> object:
        """Run one command; ``fd`` is passed along (SCM_RIGHTS), as ``getfd`` wants."""
        msg: dict[str, object] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        deadline = time.monotonic() + timeout
        self.sock.setblocking(True)
        try:
            self.sock.settimeout(timeout)
            data = leanjson.dumps(msg).encode() + b"\n"
            if fd >= 0:
                socket.send_fds(self.sock, [data], [fd])
            else:
                self.sock.sendall(data)
            while True:
                while b"\n" not in self.buf:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise QmpError(f"QMP {command}: no answer within {timeout:g}s")
                    self.sock.settimeout(left)
                    chunk = self.sock.recv(1 << 16)
                    if not chunk:
                        raise QmpError(f"QMP {command}: QEMU closed the monitor")
                    self.buf += chunk
                    if len(self.buf) > 1 << 20:
                        raise QmpError("QMP: answer too long")
                line, _, self.buf = self.buf.partition(b"\n")
                try:
                    reply = leanjson.loads(line)
                except ValueError:
                    continue
                if not isinstance(reply, dict) or "event" in reply:
                    continue
                if "error" in reply:
                    raise QmpError(f"QMP {command}: {reply['error']}")
                if "return" in reply:
                    return reply["return"]
        except (TimeoutError, OSError) as e:
            raise QmpError(f"QMP {command}: {e}") from None
        finally:
            self.sock.setblocking(False)

    def status(self) -> str:
        ret = self.execute("query-status")
        return str(ret.get("status")) if isinstance(ret, dict) else "unknown"

    def save(self, path: str, timeout: float = SAVE_TIMEOUT, durable: bool = True) -> None:
        """Stop the guest and write its RAM and device state to ``path``. The relay opens the
        file and hands QEMU the descriptor (``getfd``): QEMU's Landlock stays as it is, no
        ``exec:`` helper runs. The migration capabilities stay those the VM started with
        (``x-ignore-shared`` for a box restored from a template: its RAM, a private mapping, is
        not "shared", so it is saved whole), which is what a restore of the same shape sets.
        ``durable``: fsync before the rename (a pause to disk outlives a host crash; a fork's
        state lives for one call, and the copies are restored from the page cache)."""
        tmp = f"{path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            self.send(fd, timeout)
            if durable:
                os.fsync(fd)
        except BaseException:
            os.unlink(tmp)
            raise
        finally:
            os.close(fd)
        os.rename(tmp, path)

    def send(self, fd: int, timeout: float) -> None:
        """Stop the guest and write its RAM and device state into ``fd``: a file (:meth:`save`) or
        a pipe a new QEMU reads from as it is written (the save and the load overlap). A reader
        that goes away fails the write (EPIPE), a reader that stops reading fails it after
        ``timeout``."""
        self.execute("stop")
        self.execute("getfd", {"fdname": SAVE_FD_NAME}, fd=fd)
        self.execute("migrate-set-parameters", {"max-bandwidth": UNTHROTTLED})
        self.execute("migrate", {"uri": f"fd:{SAVE_FD_NAME}"})
        self.await_migration(timeout)

    def await_migration(self, timeout: float) -> None:
        """Until the running migration completes; it is cancelled after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.execute("query-migrate")
            status = state.get("status") if isinstance(state, dict) else None
            if status == "completed":
                return
            if status in ("failed", "cancelled"):
                why = state.get("error-desc", status) if isinstance(state, dict) else status
                raise QmpError(f"saving the VM failed: {why}")
            if time.monotonic() > deadline:
                self.execute("migrate_cancel")
                raise QmpError(f"saving the VM took more than {timeout:g}s")
            time.sleep(0.02)


def handle(qmp: Qmp, request: dict[str, object], run_dir: str, fd: int = -1) -> dict[str, object]:
    """One control request. ``save`` writes only to ``run_dir/<name>`` (a plain file name);
    ``send`` only into ``fd``, the descriptor that came with it."""
    op = request.get("op")
    try:
        if op == "send":
            if fd < 0:
                return {"ok": False, "error": "send needs a descriptor"}
            wait = request.get("within_s")
            limit = float(wait) if isinstance(wait, (int, float)) and 0 < wait < SAVE_TIMEOUT else SAVE_TIMEOUT
            qmp.send(fd, limit)
            return {"ok": True}
        if op == "stop":
            qmp.execute("stop")
            return {"ok": True, "status": qmp.status()}
        if op == "cont":
            qmp.execute("cont")
            return {"ok": True, "status": qmp.status()}
        if op == "status":
            return {"ok": True, "status": qmp.status()}
        if op in ("save", "snapshot"):
            path = os.path.join(run_dir, SAVED_STATE_NAME if op == "save" else FORK_STATE_NAME)
            qmp.save(path, durable=op == "save")
            return {"ok": True, "path": path}
    except QmpError as e:
        return {"ok": False, "error": str(e)}
    return {"ok": False, "error": f"unknown op {op!r}"}


def read_request(conn: socket.socket, timeout: float = 2.0) -> tuple[dict[str, object] | None, int]:
    """A control connection's request line (None: malformed, too long or too slow) and the one
    descriptor that may come with it (-1: none; the caller closes it)."""
    conn.settimeout(timeout)
    data, fds = b"", []
    try:
        while b"\n" not in data and len(data) <= MAX_LINE:
            chunk, got, _, _ = socket.recv_fds(conn, MAX_LINE + 1 - len(data), 1)
            fds += got
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    for extra in fds[1:]:
        os.close(extra)
    fd = fds[0] if fds else -1
    req = None
    if b"\n" in data:
        try:
            req = leanjson.loads(data.partition(b"\n")[0])
        except ValueError:
            req = None
    return (req if isinstance(req, dict) and req.get("op") in OPS else None), fd


def request(run_dir: str, op: str, timeout: float = QMP_TIMEOUT + 2, fd: int = -1, **args: object) -> dict[str, object]:
    """Host side: send one control request to the box's relay and return its answer (``fd``
    goes along, SCM_RIGHTS; it is closed here, sent or not). Raises OSError when the relay
    cannot be reached (the box is not running)."""
    from pathlib import Path  # host side only: the relay, which imports this module, never needs them

    from ...client.agent_client import unix_address  # a home may be deeper than sun_path allows

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.settimeout(timeout)
            with unix_address(Path(run_dir) / CONTROL_SOCKET_NAME) as address:
                s.connect(address)
            line = leanjson.dumps({"op": op, **args}).encode() + b"\n"
            if fd >= 0:
                socket.send_fds(s, [line], [fd])
            else:
                s.sendall(line)
        finally:
            if fd >= 0:
                os.close(fd)  # sent or not: the relay's copy is the only one left (a gone reader fails its writes)
        data = b""
        while b"\n" not in data and len(data) <= MAX_LINE:
            chunk = s.recv(MAX_LINE + 1)
            if not chunk:
                break
            data += chunk
    try:
        reply = leanjson.loads(data.partition(b"\n")[0])
    except ValueError:
        raise OSError(f"the VM relay gave no answer to {op}") from None
    if not isinstance(reply, dict):
        raise OSError(f"the VM relay gave no answer to {op}")
    return reply
