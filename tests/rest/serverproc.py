"""Run ``python -m boxlite.server`` in a subprocess for the REST tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from support.hostprocs import free_port

SRC = Path(__file__).resolve().parents[2] / "src"
API_KEY = "test-key-0123456789"


@dataclass
class Server:
    url: str
    api_key: str | None
    home: Path
    proc: subprocess.Popen[bytes]


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


@contextlib.contextmanager
def serving_tcp(home: Path, *args: str) -> Iterator[Server]:
    """A server on a free loopback port with ``API_KEY``, stopped on exit. Its clients (the tests)
    may name any host path: the tests' rootfs directories and volumes are per-test temporary
    directories (tests/security/test_sec_rest_host_paths.py tests the default)."""
    port = free_port()
    proc = start_server(home, "--host", "127.0.0.1", "--port", str(port), "--api-key", API_KEY,
                        "--allow-any-host-path", *args)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url)
        yield Server(url, API_KEY, home, proc)
    finally:
        stop_server(proc)


def raw_client(server: Server) -> httpx.AsyncClient:
    """An HTTP client that skips the SDK (and its checks), authenticated like the SDK."""
    if server.url.startswith("unix://"):
        return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=server.url[7:]), base_url="http://boxlite")
    return httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {server.api_key}"})
