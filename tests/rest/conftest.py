"""A real ``boxlite serve`` (``python -m boxlite.server``) in a subprocess, reached through
``RemoteBoxlite`` over a unix socket or over TCP with an API key."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import boxlite
from boxlite.remote import RemoteBoxlite

SRC = Path(__file__).resolve().parents[2] / "src"
API_KEY = "test-key-0123456789"


@dataclass
class Server:
    url: str
    api_key: str | None
    home: Path
    proc: subprocess.Popen[bytes]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(home: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    env.setdefault("BOXLITE_ENGINE", os.environ.get("BOXLITE_TEST_ENGINES", "namespace").split(",")[0])
    return subprocess.Popen(
        [sys.executable, "-m", "boxlite.server", "--home", str(home), *args],
        env=env, stdin=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def wait_ready(proc: subprocess.Popen[bytes], url: str, timeout: float = 20.0) -> None:
    if url.startswith("unix://"):
        client = httpx.Client(transport=httpx.HTTPTransport(uds=url[len("unix://") :]), base_url="http://x")
    else:
        client = httpx.Client(base_url=url)
    deadline = time.monotonic() + timeout
    with client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            try:
                if client.get("/v1/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise RuntimeError("server did not become ready")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module", params=["unix", "tcp"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per test module and transport."""
    home = tmp_path_factory.mktemp("srv") / "home"
    if request.param == "unix":
        sock = home / "boxlite.sock"
        proc = start_server(home)
        url, key = f"unix://{sock}", None
    else:
        port = free_port()
        proc = start_server(home, "--host", "127.0.0.1", "--port", str(port), "--api-key", API_KEY)
        url, key = f"http://127.0.0.1:{port}", API_KEY
    try:
        wait_ready(proc, url)
        yield Server(url, key, home, proc)
    finally:
        stop_server(proc)


@pytest.fixture
async def remote(server: Server) -> AsyncIterator[RemoteBoxlite]:
    rt = boxlite.Boxlite.rest(server.url, api_key=server.api_key)
    yield rt
    await rt.shutdown(timeout=2)


@pytest.fixture
async def box(remote: RemoteBoxlite, busybox_rootfs: Path) -> AsyncIterator[boxlite.SimpleBox]:
    """Overrides the local ``box`` fixture: the same tests then run through the server."""
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=remote) as b:  # type: ignore[arg-type]
        yield b
