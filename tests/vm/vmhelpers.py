"""Helpers for the VM engine tests: box specs and a tiny agent-protocol client."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from boxlite.agent import protocol as p
from boxlite.engines.base import BoxSpec, RootLayers, RunningBox
from boxlite.engines.vm import VmEngine

requires_qemu = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs qemu-system-x86")


def make_spec(home: Path, rootfs: Path, box_id: str = "vmbox", **kw: Any) -> BoxSpec:
    box_dir = home / "boxes" / box_id
    box_dir.mkdir(parents=True, exist_ok=True)
    kw.setdefault("detach", True)
    kw.setdefault("ready_timeout", 60.0)
    return BoxSpec(
        box_id=box_id,
        box_dir=box_dir,
        root=RootLayers((rootfs,), f"busybox-{rootfs.stat().st_ino}", 0),
        hostname=box_id,
        cache_dir=home / "cache",
        **kw,
    )


@dataclass
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
    frames: list[tuple[int, int, bytes]] = field(default_factory=list)


class Client:
    """Minimal agent-protocol client (deliberately independent of boxlite.client)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.frames = p.FrameReader()
        self.pending: list[tuple[int, int, bytes]] = []

    @classmethod
    async def connect(cls, path: Path) -> Client:
        r, w = await asyncio.open_unix_connection(str(path))
        return cls(r, w)

    async def next_frame(self, channel: int) -> tuple[int, bytes]:
        while True:
            for i, (kind, ch, payload) in enumerate(self.pending):
                if ch == channel:
                    del self.pending[i]
                    return kind, payload
            data = await self.reader.read(1 << 16)
            if not data:
                raise ConnectionError("agent closed the connection")
            self.frames.feed(data)
            self.pending.extend(self.frames)

    async def request(self, channel: int, body: dict[str, Any]) -> dict[str, Any]:
        self.writer.write(p.encode_json(p.REQUEST, channel, body))
        kind, payload = await self.next_frame(channel)
        assert kind == p.RESPONSE, (kind, payload)
        return p.decode_json(payload)

    async def exec(self, argv: list[str], channel: int = 1, stdin: bytes | None = None) -> ExecResult:
        body: dict[str, Any] = {"op": "exec", "argv": argv, "stdin": stdin is not None}
        resp = await self.request(channel, body)
        assert resp.get("ok"), resp
        if stdin is not None:
            self.writer.write(p.encode(p.STDIN, channel, stdin) + p.encode(p.STDIN, channel, b""))
        out, err = bytearray(), bytearray()
        while True:
            kind, payload = await self.next_frame(channel)
            if kind == p.STDOUT:
                out += payload
            elif kind == p.STDERR:
                err += payload
            elif kind == p.EXIT:
                return ExecResult(int(json.loads(payload)["exit_code"]), bytes(out), bytes(err))

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


async def wait_gone(running: RunningBox, timeout: float = 30.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while running.is_alive():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def shutdown(spec: BoxSpec, running: RunningBox, engine: VmEngine) -> None:
    """Graceful stop through the agent, as the runtime does; force-kill if that fails."""
    try:
        c = await Client.connect(spec.agent_socket)
        await asyncio.wait_for(c.request(99, {"op": "shutdown"}), 10)
        await c.close()
    except (OSError, ConnectionError, asyncio.TimeoutError):
        pass
    if not await wait_gone(running, 20):
        await engine.kill(spec, running)
    engine.cleanup(spec)
