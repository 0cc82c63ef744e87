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
