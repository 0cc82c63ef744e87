"""A hostile or wedged server, seen from the REST client (SDK and CLI): its answers are read up to
a size limit, and read-only calls give up at a deadline, with typed errors; nothing it sends can
fill the client's memory or hang it forever.

The server here is a raw asyncio socket server on loopback that misbehaves per path.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import boxlite
from boxlite.backends.rest import backend as rest_backend
from boxlite.backends.rest import download as rest_download
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
            if path.endswith("/export"):
                return await self._export(path.split("/")[3], writer)
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

    async def _export(self, box: str, writer: asyncio.StreamWriter) -> None:
        """huge: announces 1 TiB; endless: chunked without end; stall: 1 MiB of the 10 it announces."""
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
        if box == "endless":
            writer.write(head + b"transfer-encoding: chunked\r\n\r\n")
            while True:
                writer.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
                await writer.drain()
                self.sent += len(CHUNK)
        size = 1 << 40 if box == "huge" else 10 << 20
        writer.write(head + b"content-length: %d\r\n\r\n" % size)
        for _ in range(16):
            writer.write(CHUNK)
            await writer.drain()
            self.sent += len(CHUNK)
        await asyncio.sleep(3600)

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
    monkeypatch.setattr(rest_download, "READ_DEADLINE", 2.0)
    server = Hostile()
    yield server
    server.close()


def test_an_endless_answer_is_cut_at_the_limit(hostile: Hostile) -> None:
    async def main() -> None:
        rt = boxlite.Boxlite.rest(hostile.url)
        try:
            with pytest.raises(ResourceExhaustedError, match="longer than"):
                await rt.list_info()  # a listing: 64 MiB at most
            # (the server counts a chunk once its write drained, in its own thread: it may lag what
            # the client read by what is in flight, hence the lower bound's 1 MiB of slack)
            assert rest_transport.MAX_ANSWER - (1 << 20) <= hostile.sent < rest_transport.MAX_ANSWER + (8 << 20)
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
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "boxlite.cli", "--home", str(tmp_path), "--url", hostile.url, "ls"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "longer than" in lines[0], proc.stderr


def test_an_export_cannot_fill_the_disk_or_hang(hostile: Hostile, tmp_path: Path) -> None:
    """An exported archive is written on this host's disk: a server announcing more than
    max_bytes or the free space is refused before a byte is written, one sending without end
    stops at max_bytes (or at a full disk, cleaned up), one that stalls meets the deadline;
    nothing is left at the destination in each case."""
    disk = tmp_path / "small"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(disk)], check=True)
    try:

        async def main() -> None:
            rt = boxlite.Boxlite.rest(hostile.url)
            backend = rt._backend
            try:
                dest = str(tmp_path / "out.boxlite")
                with pytest.raises(ResourceExhaustedError, match="max_bytes"):
                    await backend.export("huge", dest, boxlite.ExportOptions(max_bytes=1 << 30))
                with pytest.raises(ResourceExhaustedError, match="free"):
                    await backend.export("huge", dest, boxlite.ExportOptions())
                hostile.sent = 0
                with pytest.raises(ResourceExhaustedError, match="more than"):
                    await backend.export("endless", dest, boxlite.ExportOptions(max_bytes=4 << 20))
                assert hostile.sent < 64 << 20
                with pytest.raises(ResourceExhaustedError):  # no max_bytes: the disk fills, then is freed
                    await backend.export("endless", str(disk / "out.boxlite"), boxlite.ExportOptions())
                start = time.monotonic()
                with pytest.raises(TimeoutError, match="sent nothing"):
                    await backend.export("stall", dest, boxlite.ExportOptions())
                assert time.monotonic() - start < 30
            finally:
                await rt.shutdown()

        asyncio.run(main())
        assert list(disk.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["small"]
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)
