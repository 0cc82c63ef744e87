"""One engine-agnostic scenario through each backend: the same ``Boxlite``/``Box`` calls, on
this machine (``Boxlite(options)``) and through a ``boxlite serve`` (``Boxlite.rest(url)``),
give the same results and the same typed errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import boxlite
from boxlite.client.credit import StdinWindow
from boxlite.remote import RemoteBox
from rest.serverproc import Server, start_server, stop_server, wait_ready


@pytest.fixture(scope="module")
def rest_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("backends") / "home"
    url = f"unix://{home / 'boxlite.sock'}"
    proc = start_server(home)
    try:
        wait_ready(proc, url)
        yield Server(url, None, home, proc)
    finally:
        stop_server(proc)


@pytest.fixture(params=["local", "rest"])
async def rt(request: pytest.FixtureRequest, home: Path, engine: str) -> AsyncIterator[boxlite.Boxlite]:
    if request.param == "local":
        runtime = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine=engine))
    else:
        runtime = boxlite.Boxlite.rest(request.getfixturevalue("rest_server").url)
    yield runtime
    await runtime.shutdown(timeout=2)


async def run(box: boxlite.Box, *argv: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    execution = await box.exec(argv[0], list(argv[1:]), stdin=stdin is not None)
    if stdin is not None:
        writer = execution.stdin()
        await writer.send_input(stdin)
        await writer.close()
    out, err = await asyncio.gather(execution.stdout().read(), execution.stderr().read())
    return (await execution.wait()).exit_code, out, err


async def test_one_scenario_on_every_backend(
    rt: boxlite.Boxlite, engine: str, busybox_rootfs: Path, tmp_path: Path
) -> None:
    remote = not hasattr(rt._backend, "home")
    name = f"scenario-{engine}-{'rest' if remote else 'local'}"
    options = boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), engine=engine, memory_mib=128, auto_remove=False)
    box = await rt.create(options, name=name)
    assert isinstance(box, boxlite.Box) and isinstance(box, RemoteBox) == remote
    info = box.info()
    assert (info.name, info.status, info.memory_mib, info.engine) == (name, "configured", 128, engine)
    with pytest.raises(boxlite.AlreadyExistsError):
        await rt.create(options, name=name)

    # exec: exit status, both streams, env, stdin beyond one credit window (256 KiB)
    assert await run(box, "sh", "-c", "echo out; echo err >&2; exit 3") == (3, "out\n", "err\n")
    assert box.info().state.running  # the first exec started it
    data = bytes(range(256)) * 1200
    code, out, _ = await run(box, "sh", "-c", "wc -c", stdin=data)
    assert (code, out.strip()) == (0, str(len(data)))
    env_exec = await box.exec("sh", ["-c", "echo $GREETING"], env={"GREETING": "hi"})
    assert (await env_exec.stdout().read(), (await env_exec.wait()).exit_code) == ("hi\n", 0)
    with pytest.raises(boxlite.ExecError):
        await box.exec("/no/such/binary")

    # copy in and out (a tree with a binary file), and a missing path
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.bin").write_bytes(data)
    await box.copy_in(str(src), "/tmp")
    assert await run(box, "cat", "/tmp/tree/a.txt") == (0, "alpha\n", "")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    await box.copy_out("/tmp/tree", str(out_dir))
    assert (out_dir / "tree" / "sub" / "b.bin").read_bytes() == data
    assert (out_dir / "tree" / "a.txt").read_text() == "alpha\n"
    with pytest.raises(boxlite.NotFoundError):
        await box.copy_out("/does/not/exist", str(out_dir))

    # info, lookup, listing, metrics
    same = await rt.get(name)
    assert same is not None and same.id == box.id and same.info().state.running
    assert [i.id for i in await rt.list_info(state="running")] == [box.id]
    metrics = await box.metrics()
    assert metrics.commands_executed_total >= 5 and metrics.exec_errors_total >= 2
    assert metrics.bytes_sent_total > len(data) and metrics.bytes_received_total > len(data)
    assert (await rt.metrics()).num_running_boxes == 1

    # stop, remove; the same typed errors afterwards
    with pytest.raises(boxlite.InvalidStateError):
        await rt.remove(box.id)
    await box.stop()
    assert box.info().status == "stopped"
    await rt.remove(name)
    assert await rt.get(box.id) is None and await rt.get_info(name) is None
    with pytest.raises(boxlite.NotFoundError):
        await rt.remove(box.id)
    with pytest.raises(boxlite.NotFoundError):
        await box.exec("true")
    assert await rt.list_info() == []


async def test_stdin_window_sends_only_within_credit() -> None:
    """The one stdin writer of both backends (agent and REST channels): a receiver that grants
    no more credit gets no more bytes, in chunks no larger than its frame limit."""
    window = StdinWindow(credit=10, max_chunk=4)
    sent: list[bytes] = []

    async def send(chunk: bytes) -> None:
        sent.append(chunk)

    async def settle() -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    writer = asyncio.ensure_future(window.write(b"x" * 25, send, lambda: False))
    await settle()
    assert not writer.done() and sum(map(len, sent)) == 10 and max(map(len, sent)) <= 4
    window.grant(7)
    await settle()
    assert not writer.done() and sum(map(len, sent)) == 17
    window.grant(100)
    assert await writer is True and b"".join(sent) == b"x" * 25

    starved, ended = StdinWindow(credit=0, max_chunk=4), False
    writer = asyncio.ensure_future(starved.write(b"abc", send, lambda: ended))
    await settle()
    ended = True
    starved.wake()  # the command exited: the writer gives up instead of waiting forever
    assert await writer is False and b"".join(sent) == b"x" * 25
    assert starved.close() and not starved.close()
    with pytest.raises(boxlite.InvalidStateError):
        await starved.write(b"late", send, lambda: False)
