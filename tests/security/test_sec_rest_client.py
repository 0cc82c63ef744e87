"""A hostile or wedged server, seen from the REST client (SDK and CLI): its answers are read up to
a size limit, and read-only calls give up at a deadline, with typed errors; nothing it sends can
fill the client's memory or hang it forever.

The server here is a raw asyncio socket server on loopback that misbehaves per path.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import boxlite
from boxlite.backends.rest import backend as rest_backend
from boxlite.backends.rest import transport as rest_transport
from boxlite.errors import ResourceExhaustedError, TimeoutError

CHUNK = b"x" * 65536


class Hostile:
    """Serves misbehaving HTTP/1.1 answers on 127.0.0.1; counts the bytes it sent."""

    def __init__(self) -> None:
        self.sent = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            path = request.split(b" ")[1].split(b"?")[0].decode()
            if path == "/v1/me":  # answers its headers, then never a byte of the body
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 10\r\n\r\n")
                await writer.drain()
                await asyncio.sleep(3600)
            status = b"500 Internal Server Error" if path == "/v1/metrics" else b"200 OK"
            writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
                         b"transfer-encoding: chunked\r\n\r\n")  # fmt: skip
            prefix = b'{"progress": {"' if path == "/v1/images/pull" else b'["'
            writer.write(b"%x\r\n%s\r\n" % (len(prefix), prefix))
            while True:  # a JSON value (or an NDJSON line) without end
                writer.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
                await writer.drain()
                self.sent += len(CHUNK)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _shut(self) -> None:
        self.server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shut(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def hostile(monkeypatch: pytest.MonkeyPatch) -> Iterator[Hostile]:
    monkeypatch.setattr(rest_backend, "QUICK_DEADLINE", 2.0)
    server = Hostile()
    yield server
    server.close()


def test_an_endless_answer_is_cut_at_the_limit(hostile: Hostile) -> None:
    async def main() -> None:
        rt = boxlite.Boxlite.rest(hostile.url)
        try:
            with pytest.raises(ResourceExhaustedError, match="longer than"):
                await rt.list_info()  # a listing: 64 MiB at most
            assert rest_transport.MAX_ANSWER <= hostile.sent < rest_transport.MAX_ANSWER + (8 << 20)
            # An error body: 1 MiB at most.
            hostile.sent = 0
            with pytest.raises(ResourceExhaustedError):
                await rt.metrics()
            assert hostile.sent < rest_transport.MAX_ERROR_ANSWER + (8 << 20)
            # A pull's progress stream: one line of 1 MiB at most.
            hostile.sent = 0
            with pytest.raises(ResourceExhaustedError, match="a line"):
                await rt.images.pull("busybox", progress=lambda p: None)
            assert hostile.sent < rest_transport.MAX_LINE + (8 << 20)
        finally:
            await rt.shutdown()

    asyncio.run(main())


def test_a_silent_server_meets_the_deadline_of_read_only_calls(hostile: Hostile) -> None:
    async def main() -> None:
        rt = boxlite.Boxlite.rest(hostile.url)
        try:
            start = time.monotonic()
            with pytest.raises(TimeoutError, match="did not answer GET /v1/me within 2 s"):
                await rt.whoami()
            assert time.monotonic() - start < 10
        finally:
            await rt.shutdown()

    asyncio.run(main())
    # The blocking call of Box.info() has its own deadline.
    t = rest_transport.Transport(hostile.url)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        t.request_sync("GET", "/v1/me", deadline=2.0)
    assert time.monotonic() - start < 10
    with pytest.raises(ResourceExhaustedError):
        t.request_sync("GET", "/v1/boxes", limit=1 << 20)
    asyncio.run(t.aclose())


def test_the_cli_says_so_in_one_line(hostile: Hostile, tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "boxlite.cli", "--home", str(tmp_path), "--url", hostile.url, "ls"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "longer than" in lines[0], proc.stderr
