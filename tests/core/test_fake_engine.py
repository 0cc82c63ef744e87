"""The runtime, the public API and the REST server over the fake engine (tests/support/fake_engine.py):
no root, no namespaces. ``test_all_of_this_runs_without_root`` re-runs this module as ``nobody``."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import boxlite
from boxlite.engines.base import process_start_time
from boxlite.remote import RemoteBox
from support import fake_engine

NOBODY = 65534
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def _registered() -> None:
    fake_engine.register()


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    """A tiny image: the fake box runs the host's programs, the image only has to exist."""
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    return root


@pytest.fixture
async def rt(tmp_path: Path) -> AsyncIterator[boxlite.Boxlite]:
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=str(tmp_path / "home"), engine=fake_engine.NAME))
    yield runtime
    await runtime.shutdown(timeout=2)


async def run(box: boxlite.Box | RemoteBox, *argv: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    execution = await box.exec(argv[0], list(argv[1:]), stdin=stdin is not None)

    async def feed() -> None:
        if stdin is not None:
            writer = execution.stdin()
            await writer.write(stdin)
            await writer.close()

    out, err, _ = await asyncio.gather(execution.stdout().read(), execution.stderr().read(), feed())
    return (await execution.wait()).exit_code, out, err


def gone(pid: int, start: int | None, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process_start_time(pid) != start:
            return True
        time.sleep(0.01)
    return False


async def test_lifecycle_create_start_stop_restart_remove(rt: boxlite.Boxlite, rootfs: Path) -> None:
    box = await rt.create(boxlite.BoxOptions(rootfs_path=str(rootfs), auto_remove=False), name="fake1")
    assert box.info().state.status == "configured"
    assert await run(box, "echo", "hello") == (0, "hello\n", "")
    info = box.info()
    assert info.state.running and info.engine == fake_engine.NAME
    pid, start = info.state.pid, process_start_time(info.state.pid or 0)
    assert pid and start is not None
    await box.stop()
    assert gone(pid, start)
    assert box.info().state.status == "stopped" and box.info().state.pid is None
    assert await run(box, "sh", "-c", "exit 3") == (3, "", "")  # exec starts it again
    assert [i.name for i in await rt.list_info(state="running")] == ["fake1"]
    with pytest.raises(boxlite.InvalidStateError):
        await rt.remove("fake1")
    await rt.remove("fake1", force=True)
    assert await rt.get("fake1") is None


async def test_api_streams_stdin_env_and_timeout(rt: boxlite.Boxlite, rootfs: Path) -> None:
    async with boxlite.SimpleBox(rootfs_path=str(rootfs), runtime=rt) as box:
        code, out, err = await run(box.box, "sh", "-c", "cat; echo oops >&2", stdin=b"x" * 300_000)
        assert (code, len(out), err) == (0, 300_000, "oops\n")
        result = await box.exec("sh", "-c", "echo $GREETING", env={"GREETING": "hi"})
        assert (result.exit_code, result.stdout) == (0, "hi\n")
        t0 = time.monotonic()
        timed_out = await box.exec("sleep", "30", timeout=0.5)
        assert timed_out.timed_out and timed_out.exit_code != 0
        assert time.monotonic() - t0 < 10


async def test_killed_agent_is_reported_stopped_and_restarts(rt: boxlite.Boxlite, rootfs: Path) -> None:
    box = await rt.create(boxlite.BoxOptions(rootfs_path=str(rootfs), auto_remove=False))
    running = await box.exec("sh", ["-c", "echo started; sleep 1000"], stdin=False)
    assert await running.stdout().__aiter__().__anext__() == "started\n"
    pid = box.info().state.pid or 0
    start = process_start_time(pid)
    os.kill(pid, 9)
    assert gone(pid, start)
    status = await asyncio.wait_for(running.wait(), 5)  # ends promptly, with an error
    assert status.exit_code != 0 and status.error_message
    info = await rt.get_info(box.id)
    assert info is not None and info.state.status == "stopped" and info.state.pid is None
    await box.start()
    assert await run(box, "echo", "back") == (0, "back\n", "")
    assert box.info().state.pid != pid
    await box.stop()


async def test_runtime_shutdown_ends_non_detached_boxes(tmp_path: Path, rootfs: Path) -> None:
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=str(tmp_path / "home"), engine=fake_engine.NAME))
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=str(rootfs), auto_remove=False))
    await run(box, "true")
    pid = box.info().state.pid or 0
    start = process_start_time(pid)
    await runtime.shutdown(timeout=2)
    assert gone(pid, start)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """The REST app (``server/app.py``) under uvicorn on a unix socket, in a thread of this process
    (its runtime on the fake engine, which is registered here only)."""
    import uvicorn

    from boxlite.server.app import create_app
    from boxlite.server.listen import unix_listener

    path = tmp_path / "srv.sock"
    options = boxlite.Options(home_dir=str(tmp_path / "srv"), engine=fake_engine.NAME)
    app = create_app(options, unix_socket=str(path))  # its own socket: clients name any host path
    srv = uvicorn.Server(uvicorn.Config(app, ws="websockets-sansio", lifespan="on", log_level="warning"))
    sock = unix_listener(path)
    thread = threading.Thread(target=lambda: asyncio.run(srv.serve(sockets=[sock])), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not srv.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server not ready"
            time.sleep(0.02)
        yield f"unix://{path}"
    finally:
        srv.should_exit = True
        thread.join(15)
        sock.close()


async def test_rest_server_runs_boxes(server: str, rootfs: Path) -> None:
    remote = boxlite.Boxlite.rest(server)
    try:
        async with boxlite.SimpleBox(rootfs_path=str(rootfs), runtime=remote) as box:  # type: ignore[arg-type]
            result = await box.exec("sh", "-c", "echo out; echo err >&2; exit 5")
            assert (result.exit_code, result.stdout, result.stderr) == (5, "out\n", "err\n")
            info = await remote.get_info(box.id)
            assert info is not None and info.engine == fake_engine.NAME and info.state.running
    finally:
        await remote.shutdown(timeout=2)


@pytest.mark.skipif(os.geteuid() != 0, reason="runs as nobody already")  # the re-run takes this branch
def test_all_of_this_runs_without_root() -> None:
    """The tests above, again as uid/gid 65534 with no capability: the fake engine needs no root."""
    if not shutil.which("setpriv"):
        pytest.fail("setpriv (util-linux) is needed")
    work = Path(tempfile.mkdtemp(prefix="boxlite-nobody-"))  # not under pytest's 0700 base dir
    try:
        os.chown(work, NOBODY, NOBODY)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BOXLITE_", "PYTEST_"))}
        env.update(HOME=str(work), TMPDIR=str(work), PYTHONDONTWRITEBYTECODE="1")
        proc = subprocess.run(
            ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups", "--inh-caps=-all",
             "--bounding-set=-all", "--no-new-privs",
             sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={work / 'pytest'}",
             "-k", "not without_root", str(Path(__file__))],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = (proc.stdout.strip().splitlines() or [""])[-1]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "5 passed" in summary and "skipped" not in summary, summary
