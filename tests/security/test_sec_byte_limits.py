"""Byte limits on every path a box, a guest agent or a REST client can push data through
(issue 18, items 7-9): each test reproduces the attack and checks that it is now bounded."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import select
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import boxlite
from boxlite import errors
from boxlite.agent import protocol as p
from boxlite.client.agent_client import AgentClient
from boxlite.engines.vm.relayd import CLIENT_BACKLOG, RelayServer
from boxlite.server.limits import MAX_BODY, MAX_UPLOAD, BodyLimitMiddleware
from rest.serverproc import Server, start_server, stop_server, wait_ready
from support.cli import Cli
from support.scripted_agent import scripted_agent

LOG_CAP = 256 * 1024


async def test_main_process_printing_fast_stays_within_the_log_cap(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A main process printing as fast as it can for seconds: run/main.log never passes the cap
    (BOXLITE_LOG_MAX_BYTES), the older output is in main.log.1, and ``boxlite logs`` shows both."""
    monkeypatch.setenv("BOXLITE_LOG_MAX_BYTES", str(LOG_CAP))
    line = "0123456789" * 10
    opts = boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), cmd=["yes", line], auto_remove=False)
    box = await runtime.create(opts)
    await box.start()
    run = runtime.home.box_dir(box.id) / "run"
    log, old = run / "main.log", run / "main.log.1"
    largest = 0
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        for path in (log, old):
            with contextlib.suppress(FileNotFoundError):  # between rename and reopen on rotation
                largest = max(largest, path.stat().st_size)
        await asyncio.sleep(0.05)
    assert old.exists(), "the box printed more than the cap: the log was rotated"
    execution = await asyncio.wait_for(box.exec("echo", ["alive"], stdin=False), 20)  # the flood starves nothing
    assert await asyncio.wait_for(execution.stdout().read(), 20) == "alive\n"
    await box.stop()
    assert largest <= LOG_CAP and log.stat().st_size <= LOG_CAP and old.stat().st_size <= LOG_CAP
    assert not (run / "main.log.2").exists()
    out = Cli(runtime.home.root, busybox_rootfs, engine)("logs", box.id)
    assert out.returncode == 0, out.stderr
    expected = old.read_bytes() + log.read_bytes()
    assert out.stdout.encode() == expected
    assert set(expected.splitlines()[1:-1]) == {line.encode()}  # whole lines, from both files
    await runtime.remove(box.id, force=True)


async def test_logs_follow_keeps_up_across_rotation(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, engine: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``boxlite logs -f`` started before the output: every line, once and in order, although
    the log was rotated twice meanwhile."""
    monkeypatch.setenv("BOXLITE_LOG_MAX_BYTES", str(p.LOG_MIN))
    script = "sleep 2; i=0; while [ $i -lt 30000 ]; do echo line-$i; i=$((i+1)); done; exec sleep 600"
    opts = boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), cmd=["sh", "-c", script], auto_remove=False)
    box = await runtime.create(opts)
    await box.start()
    cli = Cli(runtime.home.root, busybox_rootfs, engine)
    out = tmp_path / "follow.out"
    with open(out, "wb") as sink:
        follow = subprocess.Popen(cli.argv("logs", "-f", box.id), stdout=sink, env=cli.env())
        deadline = time.monotonic() + 90
        while b"line-29999\n" not in out.read_bytes():
            assert follow.poll() is None and time.monotonic() < deadline, out.read_bytes()[-200:]
            await asyncio.sleep(0.1)
        await box.stop()
        follow.wait(30)
    assert out.read_text().splitlines() == [f"line-{i}" for i in range(30000)]
    assert (runtime.home.box_dir(box.id) / "run" / "main.log.1").exists()
    await runtime.remove(box.id, force=True)


def test_foreground_run_output_recorded_within_the_cap(tmp_path: Path, busybox_rootfs: Path, engine: str) -> None:
    """``boxlite run`` (no --rm) records the box's output for ``boxlite logs``: capped the same way."""
    cli = Cli(tmp_path / "home", busybox_rootfs, engine)
    line = "0123456789" * 10
    argv = cli.argv("run", "--name", "loud", "--rootfs", str(busybox_rootfs), "sh", "-c", f"yes {line} | head -n 20000")
    env = {**cli.env(), "BOXLITE_LOG_MAX_BYTES": str(p.LOG_MIN)}
    done = subprocess.run(argv, env=env, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout) == 20000 * (len(line) + 1)  # the terminal gets everything
    recorded = sorted(p for p in (cli.home / "boxes").glob("*/cli/console.log*") if p.suffix != ".idx")
    assert [path.name for path in recorded] == ["console.log", "console.log.1"]
    assert all(path.stat().st_size <= p.LOG_MIN for path in recorded)
    logs = cli("logs", "loud")
    assert logs.returncode == 0 and logs.stdout.encode() == recorded[1].read_bytes() + recorded[0].read_bytes()


# --- REST: request bodies, stored options, WebSocket stdin credit ----------------------------


@pytest.fixture(scope="module")
def rest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real ``boxlite serve`` on a unix socket."""
    home = tmp_path_factory.mktemp("srv") / "home"
    proc = start_server(home)
    url = f"unix://{home / 'boxlite.sock'}"
    try:
        wait_ready(proc, url)
        yield Server(url, None, home, proc)
    finally:
        stop_server(proc)


def _uds(server: Server) -> str:
    return server.url[len("unix://") :]


def _http(server: Server) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=_uds(server)), base_url="http://boxlite", timeout=30)


def _raw_post(server: Server, headers: bytes, chunks: Iterator[bytes]) -> tuple[int, dict[str, object], int]:
    """POST /v1/boxes on a raw socket, sending ``chunks`` until the server answers or hangs up:
    (status, JSON body, bytes of body sent before the answer)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(_uds(server))
    sock.sendall(b"POST /v1/boxes HTTP/1.1\r\nHost: boxlite\r\nContent-Type: application/json\r\n" + headers + b"\r\n")
    sent = 0
    with sock:
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break  # the answer came while the body was still being sent
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _length(answer):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body[: _length(answer)]), sent


def _length(answer: bytes) -> int:
    for line in answer.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 1 << 30


def _no_boxes(server: Server) -> bool:
    with _http(server) as client:
        return client.get("/v1/boxes").json() == []


def test_rest_body_declared_too_large_is_refused_unread(rest: Server) -> None:
    status, body, _ = _raw_post(rest, b"Content-Length: 209715200\r\n", iter([]))
    assert status == 413 and body["error"]["type"] == "RequestTooLargeError"  # type: ignore[index]
    assert _no_boxes(rest)


def test_rest_streamed_body_over_the_limit_gets_413_before_it_is_read(rest: Server) -> None:
    """200 MiB sent chunked (no length announced): the server answers 413 once the limit is
    passed, without reading (or storing) the rest."""
    piece = b"x" * 65536
    chunks = (b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range((200 << 20) // len(piece)))
    status, body, sent = _raw_post(rest, b"Transfer-Encoding: chunked\r\n", chunks)
    assert status == 413 and body["error"]["type"] == "RequestTooLargeError"  # type: ignore[index]
    assert sent < MAX_BODY + (16 << 20)  # answered long before the 200 MiB were through
    assert _no_boxes(rest)


def test_rest_options_too_large_to_store_are_refused(rest: Server, busybox_rootfs: Path) -> None:
    """Under the body limit but over what a box record may hold: a typed 400, nothing stored."""
    options = {"rootfs_path": str(busybox_rootfs), "env": {f"V{i}": "x" * 1000 for i in range(700)}}
    with _http(rest) as client:
        resp = client.post("/v1/boxes", json={"options": options})
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "ConfigError"
    assert "more than" in resp.json()["error"]["message"]
    assert _no_boxes(rest)


def test_rest_archive_upload_has_its_own_larger_limit() -> None:
    limits = BodyLimitMiddleware(lambda *_: None)  # type: ignore[arg-type, return-value]
    assert limits.limit({"method": "PUT", "path": "/v1/boxes/b1/archive"}) == MAX_UPLOAD > MAX_BODY
    assert limits.limit({"method": "POST", "path": "/v1/boxes"}) == MAX_BODY
    assert limits.limit({"method": "POST", "path": "/v1/boxes/b1/archive/x"}) == MAX_BODY


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_ws_stdin_flood_ignoring_credit_is_disconnected(rest: Server, busybox_rootfs: Path) -> None:
    """A client pushing 256 MiB of stdin to a command that never reads it, without waiting for
    credit: the server closes the socket (1008) and its memory stays bounded."""
    from websockets.asyncio.client import unix_connect
    from websockets.exceptions import ConnectionClosed

    with _http(rest) as client:
        resp = client.post("/v1/boxes", json={"options": {"rootfs_path": str(busybox_rootfs)}})
        assert resp.status_code == 201, resp.text
        box_id = resp.json()["id"]
    try:
        ws = await unix_connect(_uds(rest), f"ws://boxlite/v1/boxes/{box_id}/exec", compression=None, max_size=None)
        await ws.send(json.dumps({"type": "start", "command": "sleep", "args": ["60"]}))
        started = json.loads(await asyncio.wait_for(ws.recv(), 60))
        assert started["type"] == "started"
        before = _rss_kib(rest.proc.pid)
        frame = b"\x00" + b"x" * 65536
        sent = 0

        async def flood() -> None:
            nonlocal sent
            while sent < 256 << 20:
                await ws.send(frame)
                sent += len(frame) - 1
            await ws.recv()

        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(flood(), 60)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert sent < 64 << 20
        assert _rss_kib(rest.proc.pid) - before < 64 * 1024
    finally:
        with _http(rest) as client:
            client.delete(f"/v1/boxes/{box_id}", params={"force": True})


# --- a hostile agent: output beyond credit, oversize frames, no answers -------------------------


@pytest.mark.parametrize("attack", ["beyond_credit", "oversize_frame"])
async def test_agent_flooding_output_is_dropped_with_a_typed_error(tmp_path: Path, attack: str) -> None:
    """An agent answering an exec with output it was given no credit for (or a frame longer than
    MAX_PAYLOAD): the client buffers no more than the window, drops the connection and every
    call on it fails with AgentProtocolError (a BoxDiedError)."""
    window = 256 * 1024

    async def flood(writer: asyncio.StreamWriter, kind: int, channel: int, payload: bytes) -> None:
        if kind != p.REQUEST:
            return
        writer.write(p.encode_json(p.RESPONSE, channel, {"ok": True, "pid": 42}))
        if attack == "oversize_frame":
            writer.write(p.HEADER.pack(p.MAX_PAYLOAD + 1, p.STDOUT, channel))
        else:
            chunk = p.encode(p.STDOUT, channel, b"y" * p.CHUNK)
            for _ in range((window + (8 << 20)) // p.CHUNK):  # 8 MiB more than granted
                writer.write(chunk)
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    path = tmp_path / "agent.sock"
    async with await scripted_agent(path, flood):
        client = await AgentClient.connect(path, label="hostile")
        ch = await client.exec({"argv": ["x"], "window": window}, "x")
        with pytest.raises(errors.AgentProtocolError):
            await asyncio.wait_for(ch.exit, 10)
        assert ch.stdout.total <= window
        assert client.closed
        with pytest.raises(errors.BoxDiedError, match="broke the protocol"):
            await client.request("ping")
        await client.close()


async def test_agent_that_never_answers_times_out(tmp_path: Path) -> None:
    async def silent(*_: object) -> None:
        pass

    path = tmp_path / "agent.sock"
    async with await scripted_agent(path, silent):
        client = await AgentClient.connect(path, label="silent")
        t0 = time.monotonic()
        with pytest.raises(errors.AgentTimeoutError):
            await client.exec({"argv": ["x"]}, "x", timeout=0.5)
        with pytest.raises(errors.AgentTimeoutError):
            await client.request("ping", timeout=0.5)
        assert time.monotonic() - t0 < 5
        assert issubclass(errors.AgentTimeoutError, errors.BoxliteError)
        for method in (AgentClient.exec, AgentClient.request):  # no call waits forever by default
            assert 0 < inspect.signature(method).parameters["timeout"].default < 300
        await client.close()


# --- the VM relay: an oversize guest frame ---------------------------------------------------


async def test_relay_survives_an_oversize_guest_frame(tmp_path: Path) -> None:
    """A guest agent sending a frame longer than MAX_PAYLOAD: the relay does not crash; it closes
    the guest stream, answers waiting host clients with a clear EngineError, disconnects them
    and ends (a real relay stops QEMU) -- no traceback, no unbounded buffering."""
    relay_end, guest = socket.socketpair()
    guest.settimeout(10)
    path = tmp_path / "agent.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    server = RelayServer(relay_end, listener, log_dir=str(tmp_path))
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(server.run())
        except BaseException as e:  # the attack must not get here
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    loop = asyncio.get_running_loop()
    client = await AgentClient.connect(path, label="vm")
    ping = asyncio.ensure_future(client.request("ping", timeout=10))
    frames = p.FrameReader()
    while not (got := list(frames)):
        frames.feed(await loop.run_in_executor(None, guest.recv, 65536))
    ((kind, gid, _),) = got
    assert kind == p.REQUEST
    guest.sendall(p.HEADER.pack(p.MAX_PAYLOAD + 1, p.RESPONSE, gid) + b"z" * 4096)
    with pytest.raises(errors.EngineError, match="broke the protocol"):
        await ping
    await loop.run_in_executor(None, thread.join, 10)
    assert outcome == [0]
    assert await loop.run_in_executor(None, guest.recv, 1) == b""  # the guest stream was closed
    with pytest.raises(errors.BoxDiedError):
        await client.request("ping", timeout=5)
    await client.close()
    guest.close()


def test_relay_drops_a_client_the_guest_floods_beyond_credit(tmp_path: Path) -> None:
    """A guest pushing output a host client never granted (and never reads): the relay queues
    at most CLIENT_BACKLOG for it, then drops that client and kills its execution."""
    relay_end, guest = socket.socketpair()
    guest.settimeout(20)
    path = tmp_path / "agent.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    server = RelayServer(relay_end, listener)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(path))
        client.sendall(p.encode_json(p.REQUEST, 1, {"op": "exec", "argv": ["x"]}))
        frames = p.FrameReader()
        while not (got := list(frames)):
            frames.feed(guest.recv(65536))
        ((_, gid, _),) = got
        guest.sendall(p.encode_json(p.RESPONSE, gid, {"ok": True, "pid": 7}))
        chunk = p.encode(p.STDOUT, gid, b"f" * p.MAX_PAYLOAD)
        for _ in range((CLIENT_BACKLOG >> 20) + 16):
            guest.sendall(chunk)
        kill = None
        while kill is None:
            data = guest.recv(65536)
            assert data, "the relay closed the guest stream"
            frames.feed(data)
            kill = next((f for f in frames if f[0] == p.CONTROL and f[1] == gid), None)
        assert json.loads(kill[2]) == {"op": "kill"}
        assert not server.clients and thread.is_alive()
        client.close()
    finally:
        server.stop()
        thread.join(5)
