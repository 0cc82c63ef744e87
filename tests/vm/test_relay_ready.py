"""The VM relay reports a starting box ready: the shim hands over before the agent answered, and
the relay's own first ``hello`` decides readiness (no VM: the test plays the agent)."""

from __future__ import annotations

import json
import os
import select
import socket
import threading
from pathlib import Path

from boxlite.agent import protocol as p
from boxlite.engines.vm.relayd import RelayServer


def _frames(sock: socket.socket, n: int) -> list[tuple[int, int, bytes]]:
    reader, out = p.FrameReader(), list[tuple[int, int, bytes]]()
    sock.settimeout(5)
    while len(out) < n:
        data = sock.recv(65536)
        assert data, "relay closed the guest stream"
        reader.feed(data)
        out.extend(reader)
    return out


def _status(fd: int, timeout: float) -> bytes | None:
    """What the relay wrote on the status pipe within ``timeout``: None if nothing, b"" at EOF."""
    if not select.select([fd], [], [], timeout)[0]:
        return None
    return os.read(fd, 4096)


def test_ready_only_when_the_agent_answers_the_relays_hello(tmp_path: Path) -> None:
    relay_end, guest = socket.socketpair()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "agent.sock"))
    listener.listen(8)
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    server = RelayServer(relay_end, listener, log_dir=str(tmp_path))
    server.await_ready(status_w, json.dumps({"qemu_pid": 7}), {"op": "hello", "time_ns": 5})
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        ((kind, channel, body),) = _frames(guest, 1)
        assert kind == p.REQUEST and json.loads(body) == {"op": "hello", "time_ns": 5}
        assert _status(status_r, 0.3) is None  # the agent has not answered: not ready
        guest.sendall(p.encode_json(p.RESPONSE, channel + 1, {}))  # an answer on another channel
        assert _status(status_r, 0.3) is None
        guest.sendall(p.encode_json(p.RESPONSE, channel, {"version": 1, "pid": 1}))
        line = _status(status_r, 5)
        assert line
        assert p.parse_status(line).word == p.STATUS_READY
        assert json.loads(p.parse_status(line).arg) == {"qemu_pid": 7}
        assert _status(status_r, 5) == b""  # then EOF: the relay closed its end
    finally:
        server.stop()
        thread.join(5)
        os.close(status_r)
        guest.close()
    assert not thread.is_alive()
