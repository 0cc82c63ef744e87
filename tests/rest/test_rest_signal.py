"""``POST /v1/boxes/{id}/signal`` (``Box.signal_main``, ``boxlite --url U kill -s USR1``): a signal
reaches the box's main process through a real ``boxlite serve``; bad input is refused by the
server itself (not only by the SDK), typed on the client."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

import boxlite
from boxlite.remote import RemoteBoxlite
from rest.serverproc import Server, raw_client, serving_tcp

TRAPPER = "trap 'echo usr1 >> /tmp/got' USR1; touch /tmp/ready; while :; do sleep 0.1; done"
"""A main process that records each SIGUSR1 and goes on."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Loopback TCP with an API key only (the route is the same over the unix socket)."""
    with serving_tcp(tmp_path_factory.mktemp("sig") / "home") as tcp:
        yield tcp


async def _until(box: boxlite.Box, path: str, want: str = "") -> str:
    for _ in range(300):
        run = await box.exec("cat", [path])
        text = await run.stdout().read()
        if (await run.wait()).exit_code == 0 and want in text:
            return text
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} never had {want!r}")


async def test_signal_reaches_the_main_process(remote: RemoteBoxlite, busybox_rootfs: Path) -> None:
    box = await remote.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), cmd=["sh", "-c", TRAPPER]))
    try:
        await box.start()
        await _until(box, "/tmp/ready")
        await box.signal_main(10)
        assert await _until(box, "/tmp/got", "usr1") == "usr1\n"
        await box.signal_main(10)  # (after the first was handled: a pending one would merge with it)
        assert await _until(box, "/tmp/got", "usr1\nusr1\n") == "usr1\nusr1\n"
        assert box.info().state.running  # the trap handled it: the box goes on
    finally:
        await remote.remove(box.id, force=True)


async def test_signal_route_refuses_bad_input(remote: RemoteBoxlite, server: Server, busybox_rootfs: Path) -> None:
    idle = await remote.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=False))
    try:
        async with raw_client(server) as client:  # skips the SDK: the server checks by itself
            url = f"/v1/boxes/{idle.id}/signal"
            for bad in ({"signal": 0}, {"signal": 65}, {"signal": -9}, {"signal": "10"}, {"signal": 10.5},
                        {"signal": 10, "x": 1}, {}):  # fmt: skip
                resp = await client.post(url, json=bad)
                assert resp.status_code == 400, (bad, resp.text)
                assert resp.json()["error"]["type"] == "ConfigError"
            assert (await client.post(url, content=b"not json")).status_code == 400
            assert (await client.post("/v1/boxes/nope-nope/signal", json={"signal": 10})).status_code == 404
            assert (await client.post(url, json={"signal": 10})).status_code == 409  # not running
            await idle.start()
            resp = await client.post(url, json={"signal": 10})  # running, but no main process
            assert resp.status_code == 409 and "main process" in resp.json()["error"]["message"]
            assert idle.info().state.running
        with pytest.raises(boxlite.ConfigError):  # the SDK gets the type back
            await idle.signal_main(65)
        with pytest.raises(boxlite.InvalidStateError):
            await idle.signal_main(10)
    finally:
        await remote.remove(idle.id, force=True)
    async with raw_client(server) as client:  # without the key: refused before the route runs
        client.headers.pop("Authorization")
        assert (await client.post(f"/v1/boxes/{idle.id}/signal", json={"signal": 10})).status_code == 401


async def test_a_kill_over_rest_ends_a_stop_in_progress(remote: RemoteBoxlite, busybox_rootfs: Path) -> None:
    """Two clients of one server: one stops a box that ignores SIGTERM with a 300 s grace, the
    other kills it (``boxlite --url U kill``), which ends both at once; a NaN grace is refused."""
    box = await remote.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=False))
    execution = await box.exec("sh", ["-c", "trap '' TERM; touch /tmp/ready; while :; do sleep 0.1; done"])
    await _until(box, "/tmp/ready")
    with pytest.raises(boxlite.ConfigError, match="NaN"):
        await box.stop(timeout=float("nan"))
    slow = asyncio.create_task(box.stop(timeout=300))
    for _ in range(200):
        info = await remote.get_info(box.id)
        if info is not None and info.state.status == "stopping":
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the stop never began")
    await asyncio.sleep(0.5)
    started = asyncio.get_running_loop().time()
    await box.stop(timeout=0)
    assert asyncio.get_running_loop().time() - started < 30
    await asyncio.wait_for(slow, 30)
    assert (await execution.wait()).exit_code != 0
    info = await remote.get_info(box.id)
    assert info is not None and info.state.status == "stopped"
    await remote.remove(box.id)


async def test_a_detached_exec_over_rest(remote: RemoteBoxlite, server: Server, busybox_rootfs: Path) -> None:
    """``POST /v1/boxes/{id}/exec-detached`` (``Box.exec_detached``, ``boxlite --url U exec -d``):
    the command goes on after the request; the server checks what it is given by itself."""
    box = await remote.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=False))
    try:
        pid = await box.exec_detached("sh", ["-c", "echo $WHO > /tmp/ready; exec sleep 600"], env={"WHO": "rest"})
        assert pid > 0
        assert await _until(box, "/tmp/ready", "rest\n") == "rest\n"
        with pytest.raises(boxlite.ExecError, match="nope"):
            await box.exec_detached("nope")
        async with raw_client(server) as client:
            url = f"/v1/boxes/{box.id}/exec-detached"
            for bad in ({}, {"command": ""}, {"command": "true", "x": 1}, {"command": "true", "args": "a b"},
                        {"command": "true", "env": ["A=1"]}):  # fmt: skip
                resp = await client.post(url, json=bad)
                assert resp.status_code == 400, (bad, resp.text)
                assert resp.json()["error"]["type"] == "ConfigError"
            resp = await client.post(url, json={"command": "true", "args": ["x" * 1000] * 1100})
            assert resp.status_code == 413
            assert (await client.post("/v1/boxes/nope-nope/exec-detached", json={"command": "true"})).status_code == 404
        run = await box.exec("sh", ["-c", f"kill -0 {pid}"])
        assert (await run.wait()).exit_code == 0  # still running after all that
    finally:
        await remote.remove(box.id, force=True)
