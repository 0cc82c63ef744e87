"""The VM relay process: channel renumbering between many clients and one guest stream, over
real sockets (no VM: the test plays the agent on the guest end)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from boxlite.agent import protocol as p
from boxlite.engines.vm.relayd import RelayServer


class Peer:
    """A blocking socket speaking frames."""

    def __init__(self, sock: socket.socket) -> None:
        sock.settimeout(5)
        self.sock = sock
        self.frames = p.FrameReader()
        self.pending: list[tuple[int, int, bytes]] = []

    def send(self, frame: bytes) -> None:
        self.sock.sendall(frame)

    def read(self, n: int) -> list[tuple[int, int, bytes]]:
        while len(self.pending) < n:
            data = self.sock.recv(65536)
            assert data, "connection closed"
            self.frames.feed(data)
            self.pending.extend(self.frames)
        out, self.pending = self.pending[:n], self.pending[n:]
        return out


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[tuple[RelayServer, Peer, Path]]:
    """A running relay; the guest end of its stream; the path clients connect to."""
    relay_end, guest_end = socket.socketpair()
    path = tmp_path / "agent.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    server = RelayServer(relay_end, listener, log_dir=str(tmp_path))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield server, Peer(guest_end), path
    server.stop()
    thread.join(5)
    assert not thread.is_alive()


def connect(path: Path) -> Peer:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    return Peer(sock)


def settle(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_same_client_channel_from_two_clients_is_kept_apart(relay: tuple[RelayServer, Peer, Path]) -> None:
    server, guest, path = relay
    c1, c2 = connect(path), connect(path)
    c1.send(p.encode_json(p.REQUEST, 5, {"op": "ping", "who": 1}))
    ((_, g1, b1),) = guest.read(1)
    c2.send(p.encode_json(p.REQUEST, 5, {"op": "ping", "who": 2}))
    ((_, g2, b2),) = guest.read(1)
    assert g1 != g2
    assert json.loads(b1)["who"] == 1 and json.loads(b2)["who"] == 2
    # answer in reverse order: each client gets its answer on its own channel 5
    guest.send(p.encode_json(p.RESPONSE, g2, {"ok": True, "to": 2}))
    guest.send(p.encode_json(p.RESPONSE, g1, {"ok": True, "to": 1}))
    ((k1, ch1, a1),) = c1.read(1)
    ((k2, ch2, a2),) = c2.read(1)
    assert (k1, ch1, json.loads(a1)["to"]) == (p.RESPONSE, 5, 1)
    assert (k2, ch2, json.loads(a2)["to"]) == (p.RESPONSE, 5, 2)
    settle(lambda: not server.relay.routes)  # plain responses free their channel


def test_exec_channel_lives_until_exit_and_disconnect_kills(relay: tuple[RelayServer, Peer, Path]) -> None:
    server, guest, path = relay
    c1 = connect(path)
    c1.send(p.encode_json(p.REQUEST, 1, {"op": "exec", "argv": ["sleep", "9"]}))
    ((_, g, _),) = guest.read(1)
    guest.send(p.encode_json(p.RESPONSE, g, {"ok": True, "pid": 7}))
    guest.send(p.encode(p.STDOUT, g, b"hi"))
    assert [(k, c) for k, c, _ in c1.read(2)] == [(p.RESPONSE, 1), (p.STDOUT, 1)]
    c1.send(p.encode(p.STDIN, 1, b"in"))
    assert guest.read(1) == [(p.STDIN, g, b"in")]
    c1.sock.close()  # client goes away with the exec running: the relay kills it in the guest
    ((k, c, payload),) = guest.read(1)
    assert (k, c, json.loads(payload)) == (p.CONTROL, g, {"op": "kill"})
    guest.send(p.encode_json(p.EXIT, g, {"exit_code": 137}))
    time.sleep(0.05)
    assert g in server.relay.routes  # output may still trail the EXIT frame
    guest.send(p.encode(p.STDOUT, g, b"") + p.encode(p.STDERR, g, b""))
    settle(lambda: g not in server.relay.routes)  # EXIT and both ends of stream: done


def test_failed_exec_frees_channel_and_stray_frames_are_dropped(relay: tuple[RelayServer, Peer, Path]) -> None:
    server, guest, path = relay
    c1 = connect(path)
    c1.send(p.encode_json(p.REQUEST, 3, {"op": "exec", "argv": ["nope"]}))
    ((_, g, _),) = guest.read(1)
    guest.send(p.encode_json(p.RESPONSE, g, p.error_body("ExecError", "not found")))
    c1.read(1)
    settle(lambda: not server.relay.routes)
    c1.send(p.encode(p.STDIN, 3, b"late"))  # no route: dropped, not sent with a bogus channel
    guest.send(p.encode_json(p.EXIT, 12345, {"exit_code": 0}))  # unknown guest channel: dropped
    c1.send(p.encode_json(p.REQUEST, 4, {"op": "ping"}))
    ((k, _, body),) = guest.read(1)
    assert k == p.REQUEST and json.loads(body)["op"] == "ping"


def test_slow_client_gets_everything_in_order(relay: tuple[RelayServer, Peer, Path]) -> None:
    """More output than the socket buffers hold is queued, not lost or reordered."""
    _, guest, path = relay
    c1 = connect(path)
    c1.send(p.encode_json(p.REQUEST, 1, {"op": "exec", "argv": ["cat"]}))
    ((_, g, _),) = guest.read(1)
    chunks = [bytes([i % 251]) * 60000 for i in range(64)]  # ~3.8 MB
    guest.send(p.encode_json(p.RESPONSE, g, {"ok": True, "pid": 7}))
    for chunk in chunks:
        guest.send(p.encode(p.STDOUT, g, chunk))
    time.sleep(0.2)  # the client reads nothing meanwhile
    frames = c1.read(1 + len(chunks))
    assert [payload for _, _, payload in frames[1:]] == chunks


def test_detached_exec_logs_on_the_host_and_outlives_its_client(relay: tuple[RelayServer, Peer, Path]) -> None:
    """The box's main process: its output goes to <run dir>/<log> on the host, credit is the
    relay's to grant, and the client that started it may leave."""
    server, guest, path = relay
    c1 = connect(path)
    c1.send(p.encode_json(p.REQUEST, 2, {"op": "exec", "argv": ["srv"], "detach": True, "log": "../main.log"}))
    ((kind, g, body),) = guest.read(1)
    request = json.loads(body)
    assert kind == p.REQUEST and request["argv"] == ["srv"] and request["stdin"] is False
    assert "detach" not in request and "log" not in request
    guest.send(p.encode_json(p.RESPONSE, g, {"ok": True, "pid": 9}))
    assert [(k, c) for k, c, _ in c1.read(1)] == [(p.RESPONSE, 2)]
    c1.sock.close()
    guest.send(p.encode(p.STDOUT, g, b"hello ") + p.encode(p.STDERR, g, b"world\n"))
    credits = guest.read(2)  # and no kill: the asker's leaving does not end a detached exec
    assert sorted(p.decode_credit(payload) for _, _, payload in credits) == [(p.STDOUT, 6), (p.STDERR, 6)]
    log = path.parent / "main.log"  # the name's directory part is dropped
    settle(lambda: log.exists() and log.read_bytes() == b"hello world\n")
    guest.send(p.encode_json(p.EXIT, g, {"exit_code": 0}) + p.encode(p.STDOUT, g, b"") + p.encode(p.STDERR, g, b""))
    settle(lambda: g not in server.relay.routes)
