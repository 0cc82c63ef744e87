"""The VM relay reports a starting box ready: the shim hands over before the agent answered, and
the relay's own first ``hello`` decides readiness (no VM: the test plays the agent)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

from boxlite.agent import protocol as p
from boxlite.engines.vm.relay import first_channel
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


@contextlib.contextmanager
def _relay(
    tmp_path: Path, hello: dict[str, object], sent_on: int | None = None, resume_state: dict[str, object] | None = None
) -> Iterator[tuple[socket.socket, int]]:
    """A relay awaiting its box's readiness, run in a thread: (the guest's end, the status pipe)."""
    relay_end, guest = socket.socketpair()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "agent.sock"))
    listener.listen(8)
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    server = RelayServer(relay_end, listener, log_dir=str(tmp_path), resume_state=resume_state)
    server.await_ready(status_w, json.dumps({"qemu_pid": 7}), hello, sent_on)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield guest, status_r
    finally:
        server.stop()
        thread.join(5)
        os.close(status_r)
        guest.close()
    assert not thread.is_alive()


def test_ready_only_when_the_agent_answers_the_relays_hello(tmp_path: Path) -> None:
    with _relay(tmp_path, {"op": "hello", "time_ns": 5}) as (guest, status_r):
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


def test_a_resumed_guest_answers_the_shims_hello_and_later_requests_use_new_channels(tmp_path: Path) -> None:
    """On a resume the shim asks the hello itself (the agent answers while the relay starts):
    the relay is ready on the answer on that channel only, and its own requests go on from the
    next channel (the one the shim used may not be handed out again while the agent answers it)."""
    saved: dict[str, object] = {"next": 41, "logs": []}  # what the relay that saved the guest had handed out
    assert first_channel(saved) == 41
    with _relay(tmp_path, {"op": "hello"}, first_channel(saved), saved) as (guest, status_r):
        guest.sendall(p.encode_json(p.RESPONSE, 40, {}))  # not the hello's channel
        assert _status(status_r, 0.3) is None
        guest.sendall(p.encode_json(p.RESPONSE, 41, {"version": 1, "pid": 1}))
        line = _status(status_r, 5)
        assert line and p.parse_status(line).word == p.STATUS_READY
        ((kind, channel, body),) = _frames(guest, 1)  # the relay sets the guest's clock
        assert kind == p.REQUEST and json.loads(body)["op"] == "hello" and channel == 42
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(tmp_path / "agent.sock"))
            client.sendall(p.encode_json(p.REQUEST, 1, {"op": "stats"}))
            ((kind, channel, body),) = _frames(guest, 1)
            assert kind == p.REQUEST and json.loads(body) == {"op": "stats"} and channel == 43


def test_the_first_channel_comes_only_from_a_whole_number_in_range() -> None:
    assert first_channel(None) == 1 and first_channel({}) == 1 and first_channel({"next": True}) == 1
    assert first_channel({"next": "7"}) == 1 and first_channel({"next": 0}) == 1
    assert first_channel({"next": 2**40}) == 0xFFFFFFFF and first_channel({"next": 9}) == 9
