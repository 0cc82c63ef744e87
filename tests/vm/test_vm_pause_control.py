"""The VM relay's control socket (pause/resume/save): root's only, and a hostile or broken
client (oversized, malformed, silent) gets an error or is dropped without stopping the box."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import time
from pathlib import Path

from boxlite.client.agent_client import unix_address
from boxlite.engines.base import BoxSpec, RunningBox
from boxlite.engines.vm import VmEngine, vmcontrol


def raw(path: str, data: bytes, timeout: float = 10.0) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, unix_address(Path(path)) as address:
        s.settimeout(timeout)
        s.connect(address)
        try:
            s.sendall(data)
        except OSError:
            pass
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except OSError:
            pass
        return out


async def test_control_socket_is_private_and_refuses_bad_requests(
    started: tuple[VmEngine, BoxSpec, RunningBox],
) -> None:
    engine, spec, running = started
    path = str(spec.run_dir / vmcontrol.CONTROL_SOCKET_NAME)
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    for bad in (b"x" * (vmcontrol.MAX_LINE * 4) + b"\n", b"{not json}\n", b'{"op": "quit"}\n', b'["stop"]\n'):
        reply = json.loads(await asyncio.to_thread(raw, path, bad))
        assert reply["ok"] is False, bad[:40]
    # a silent client holds the relay at most 2 s; the next request is answered
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with unix_address(Path(path)) as address:
        silent.connect(address)
    t0 = time.monotonic()
    reply = await asyncio.to_thread(vmcontrol.request, str(spec.run_dir), "status", 10.0)
    assert reply == {"ok": True, "status": "running"} and time.monotonic() - t0 < 5
    silent.close()
    # the box still works: pause and resume through the engine
    await engine.freeze(spec, running)
    assert engine.is_frozen(spec)
    await engine.thaw(spec, running)
    assert not engine.is_frozen(spec) and running.is_alive()


async def test_descriptors_sent_with_requests_are_never_kept(started: tuple[VmEngine, BoxSpec, RunningBox]) -> None:
    """Only ``send`` takes a descriptor (the pipe to a fork's copy); one sent along with any other
    request, or several at once, is closed by the relay, and ``send`` without one is refused."""
    _, spec, running = started
    relay = int((spec.run_dir / "shim.pid").read_text().split()[0])  # the shim became the relay (exec)
    fds_before = len(os.listdir(f"/proc/{relay}/fd"))
    path = str(spec.run_dir / vmcontrol.CONTROL_SOCKET_NAME)

    def with_fds(line: bytes, count: int) -> dict[str, object]:
        pipes = [os.pipe() for _ in range(count)]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, unix_address(Path(path)) as address:
                s.settimeout(10)
                s.connect(address)
                socket.send_fds(s, [line], [w for _, w in pipes])
                reply: dict[str, object] = json.loads(s.recv(4096))
        finally:
            for _, w in pipes:
                os.close(w)
        for r, _ in pipes:  # the relay holds no write end: the pipe reads as closed
            os.set_blocking(r, False)
            assert os.read(r, 1) == b""
            os.close(r)
        return reply

    for line, count in ((b'{"op": "status"}\n', 1), (b'{"op": "status"}\n', 3), (b'{"op": "quit"}\n', 1)):
        reply = await asyncio.to_thread(with_fds, line, count)
        assert reply["ok"] is (b"status" in line), reply
    reply = await asyncio.to_thread(vmcontrol.request, str(spec.run_dir), "send", 10.0)
    assert reply["ok"] is False and "descriptor" in str(reply["error"])
    deadline = time.monotonic() + 5  # the relay may still be closing the last connection: a kept one stays
    while len(os.listdir(f"/proc/{relay}/fd")) > fds_before and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert len(os.listdir(f"/proc/{relay}/fd")) <= fds_before, os.listdir(f"/proc/{relay}/fd")
    assert (await asyncio.to_thread(vmcontrol.request, str(spec.run_dir), "status", 10.0))["status"] == "running"
    assert running.is_alive()
