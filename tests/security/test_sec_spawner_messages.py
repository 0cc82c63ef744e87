"""The agent's side of its spawner's socket, against a spawner that misbehaves.

The spawner is confined and non-dumpable, but it runs commands for box root: the agent treats
what it sends like any other input from the box. Each test plays a hostile spawner on the other
end of a real SOCK_SEQPACKET pair and checks that the agent's client bounds what it reads,
closes every descriptor such a message carried, and reports the spawner as gone (the agent then
starts commands by itself, as after a crash of the spawner)."""

from __future__ import annotations

import array
import os
import socket
from collections.abc import Iterator

import pytest

from boxlite.agent import spawner
from boxlite.agent.spawn import ExecSpec


@pytest.fixture
def pair() -> Iterator[tuple[spawner.SpawnerClient, socket.socket]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    client = spawner.SpawnerClient(ours, pid=0)
    yield client, theirs
    client.close()
    theirs.close()


def _send_with_pipe(sock: socket.socket, payload: bytes) -> int:
    """Send ``payload`` carrying the write end of a new pipe; the read end, which sees EOF once
    every copy of the write end is closed (i.e. once the receiver closed the one it got)."""
    r, w = os.pipe()
    sock.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [w]))])
    os.close(w)
    return r


def _closed_by_receiver(r: int) -> bool:
    os.set_blocking(r, False)
    try:
        return os.read(r, 1) == b""
    except BlockingIOError:
        return False  # someone still holds the write end
    finally:
        os.close(r)


def _spec() -> ExecSpec:
    return ExecSpec(argv=["true"], env={"PATH": "/bin"}, cwd="/", user=None, tty=False)


def test_a_reply_longer_than_the_limit_drops_the_spawner_and_closes_its_fds(
    pair: tuple[spawner.SpawnerClient, socket.socket],
) -> None:
    client, hostile = pair
    reply = b'{"pid": 1, "junk": "' + b"x" * (spawner.MAX_REPLY + 1) + b'"}'
    r = _send_with_pipe(hostile, reply)  # queued: the client reads it as the reply to its request
    with pytest.raises(ConnectionError, match="longer than"):
        client.start(_spec(), [])
    assert _closed_by_receiver(r), "the descriptor carried by the oversized reply was kept open"
    assert hostile.recv(1 << 16), "the request was sent before the reply was read"


def test_an_exit_message_longer_than_the_limit_counts_the_spawner_gone(
    pair: tuple[spawner.SpawnerClient, socket.socket],
) -> None:
    client, hostile = pair
    client.sock.setblocking(False)  # as the agent's selector reads it
    r = _send_with_pipe(hostile, b'{"exit": 5, "code": 0, "x": "' + b"y" * (2 * spawner.MAX_REPLY) + b'"}')
    assert client.read_exits() is None
    assert _closed_by_receiver(r)


def test_a_spawner_that_never_answers_is_given_up_after_its_deadline(
    pair: tuple[spawner.SpawnerClient, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _hostile = pair
    monkeypatch.setattr(spawner, "REPLY_TIMEOUT", 0.3)
    with pytest.raises(ConnectionError, match="did not answer"):
        client.start(_spec(), [])


def test_a_reply_within_the_limit_is_read_whole(pair: tuple[spawner.SpawnerClient, socket.socket]) -> None:
    """The limit's other side: a legitimate reply as long as the limit allows still reads."""
    client, hostile = pair
    body = b'{"pid": 42, "pad": "'
    hostile.send(body + b"z" * (spawner.MAX_REPLY - len(body) - 2) + b'"}')
    assert client.start(_spec(), []) == 42
