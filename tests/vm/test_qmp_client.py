"""The blocking QMP client the shim and the relay share (``vmcontrol.Qmp``), against a QEMU that
may be hostile (a guest that broke out into its QEMU process speaks QMP to the host): every
command has a deadline, an answer is capped, and what is not an answer is skipped. No VM: the
test plays the monitor."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from boxlite.engines.vm import vmcontrol

Monitor = Callable[[Callable[[socket.socket], None]], vmcontrol.Qmp]


@pytest.fixture
def monitor() -> Iterator[Monitor]:
    """Runs ``play(qemu_end)`` in a thread; returns a client on the other end."""
    made: list[tuple[socket.socket, socket.socket, threading.Thread]] = []

    def start(play: Callable[[socket.socket], None]) -> vmcontrol.Qmp:
        ours, theirs = socket.socketpair()
        thread = threading.Thread(target=play, args=(theirs,), daemon=True)
        thread.start()
        made.append((ours, theirs, thread))
        return vmcontrol.Qmp(ours)

    yield start
    for ours, theirs, thread in made:
        ours.close()
        theirs.close()
        thread.join(5)


def _command(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_greeting_events_and_garbage_are_skipped_until_the_answer(monitor: Monitor) -> None:
    def play(qemu: socket.socket) -> None:
        qemu.sendall(b'{"QMP": {"version": {}}}\n')
        assert b"qmp_capabilities" in _command(qemu)
        qemu.sendall(b'{"event": "RESUME"}\nnot json\n[1, 2]\n{"return": {"status": "paused"}}\n')

    qmp = monitor(play)
    assert qmp.execute("qmp_capabilities") == {"status": "paused"}


def test_an_error_answer_is_a_qmp_error(monitor: Monitor) -> None:
    def play(qemu: socket.socket) -> None:
        _command(qemu)
        qemu.sendall(b'{"error": {"class": "GenericError", "desc": "no"}}\n')

    with pytest.raises(vmcontrol.QmpError, match="GenericError"):
        monitor(play).execute("cont")


def test_a_monitor_that_never_answers_meets_the_deadline(monitor: Monitor) -> None:
    def play(qemu: socket.socket) -> None:
        _command(qemu)
        for _ in range(30):  # events only, a line every 0.1 s: each one must not reset the deadline
            try:
                qemu.sendall(b'{"event": "STOP"}\n')
            except OSError:
                return
            time.sleep(0.1)

    started = time.monotonic()
    with pytest.raises(vmcontrol.QmpError, match=r"no answer within|timed out"):
        monitor(play).execute("query-status", timeout=1.0)
    assert time.monotonic() - started < 2.5


def test_an_endless_line_is_cut_at_its_cap(monitor: Monitor) -> None:
    sent = [0]

    def play(qemu: socket.socket) -> None:
        _command(qemu)
        chunk = b"x" * (1 << 16)
        try:
            while sent[0] < 64 << 20:  # 64 MiB without a newline
                qemu.sendall(chunk)
                sent[0] += len(chunk)
        except OSError:
            return

    qmp = monitor(play)
    with pytest.raises(vmcontrol.QmpError, match="too long"):
        qmp.execute("query-status", timeout=10)
    assert len(qmp.buf) <= (1 << 20) + (1 << 16)
    assert sent[0] < 8 << 20, "the client stopped reading at the cap, not at the end"


def test_a_monitor_that_closes_is_a_qmp_error(monitor: Monitor) -> None:
    def play(qemu: socket.socket) -> None:
        _command(qemu)
        qemu.shutdown(socket.SHUT_RDWR)

    with pytest.raises(vmcontrol.QmpError, match="closed the monitor"):
        monitor(play).execute("query-status")
