"""Boxes CRUD, lifecycle, files, metrics and images through ``RemoteBoxlite``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import boxlite
from boxlite.remote import RemoteBox, RemoteBoxlite


def opts(rootfs: Path, **kw: object) -> boxlite.BoxOptions:
    return boxlite.BoxOptions(rootfs_path=str(rootfs), **kw)  # type: ignore[arg-type]


async def test_box_crud_and_lifecycle(remote: RemoteBoxlite, busybox_rootfs: Path) -> None:
    box = await remote.create(opts(busybox_rootfs, auto_remove=False, memory_mib=128), name="crud")
    assert isinstance(box, RemoteBox) and box.name == "crud"
    assert box.info().status == "configured" and (await box.info()).memory_mib == 128
    with pytest.raises(boxlite.AlreadyExistsError):
        await remote.create(opts(busybox_rootfs), name="crud")
    same, created = await remote.get_or_create(opts(busybox_rootfs), name="crud")
    assert (same.id, created) == (box.id, False)
    await box.start()
    assert box.info().state.running
    assert [i.id for i in await remote.list_info(state="running")] == [box.id]
    with pytest.raises(boxlite.InvalidStateError):
        await remote.remove("crud")
    await box.stop()
    info = await remote.get_info(box.id)
    assert info is not None and info.status == "stopped"
    await remote.remove("crud")
    assert await remote.get("crud") is None and await remote.get_info(box.id) is None
    with pytest.raises(boxlite.NotFoundError):
        await remote.remove("crud")


async def test_force_remove_and_auto_remove(remote: RemoteBoxlite, busybox_rootfs: Path) -> None:
    box = await remote.create(opts(busybox_rootfs, auto_remove=False))
    await box.start()
    await remote.remove(box.id, force=True)
    assert await remote.get(box.id) is None
    auto = await remote.create(opts(busybox_rootfs))
    assert (await (await auto.exec("true")).wait()).exit_code == 0  # exec starts the box
    await auto.stop()
    assert await remote.get(auto.id) is None


async def test_invalid_options_raise_typed_errors(remote: RemoteBoxlite, busybox_rootfs: Path) -> None:
    with pytest.raises(boxlite.ConfigError, match="memory_mib"):
        await remote.create(opts(busybox_rootfs, memory_mib=1))
    with pytest.raises(boxlite.ConfigError, match="engine"):
        await remote.create(opts(busybox_rootfs, engine="bogus"))
    with pytest.raises(boxlite.NotFoundError):
        await remote.create(boxlite.BoxOptions(rootfs_path="/no/such/rootfs"))
    assert await remote.list_info() == []


async def test_exec_on_missing_box(remote: RemoteBoxlite, busybox_rootfs: Path) -> None:
    box = await remote.create(opts(busybox_rootfs))
    await remote.remove(box.id)
    with pytest.raises(boxlite.NotFoundError):
        await box.exec("true")


async def test_copy_in_and_out(box: boxlite.SimpleBox, tmp_path: Path) -> None:
    src = tmp_path / "data"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)) * 4096)
    await box.copy_in(str(src), "/tmp")
    result = await box.exec("sh", "-c", "cat /tmp/data/a.txt; wc -c < /tmp/data/sub/b.bin")
    assert result.stdout.split() == ["alpha", str(256 * 4096)]
    await box.copy_in(str(src / "a.txt"), "/tmp/renamed.txt")
    assert (await box.exec("cat", "/tmp/renamed.txt")).stdout == "alpha\n"
    out = tmp_path / "out"
    out.mkdir()
    await box.copy_out("/tmp/data", str(out))
    assert (out / "data" / "a.txt").read_text() == "alpha\n"
    assert (out / "data" / "sub" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()
    await box.copy_out("/tmp/renamed.txt", str(tmp_path / "single.txt"))
    assert (tmp_path / "single.txt").read_text() == "alpha\n"
    with pytest.raises(boxlite.NotFoundError):
        await box.copy_out("/does/not/exist", str(out))
    with pytest.raises(boxlite.NotFoundError):
        await box.copy_in(str(tmp_path / "missing"), "/tmp")
    metrics = await box.metrics()
    assert metrics.bytes_sent_total > 256 * 4096 and metrics.bytes_received_total > 256 * 4096


async def test_metrics(remote: RemoteBoxlite, box: boxlite.SimpleBox) -> None:
    await box.exec("true")
    await box.exec("false")
    metrics = await box.metrics()
    assert metrics.commands_executed_total >= 2 and metrics.exec_errors_total >= 1
    assert metrics.pids is None or metrics.pids >= 1
    runtime = await remote.metrics()
    assert runtime.boxes_created_total >= 1 and runtime.num_running_boxes >= 1
    assert runtime.total_commands_executed >= 2


async def test_disconnect_kills_the_command(box: boxlite.SimpleBox) -> None:
    execution = await box.box.exec("sh", ["-c", "echo up; exec sleep 77"])
    assert await execution.stdout().__aiter__().__anext__() == "up\n"
    await execution._channel.close()  # type: ignore[attr-defined]
    for _ in range(50):
        if "sleep 77" not in (await box.exec("ps")).stdout:
            break
        await asyncio.sleep(0.1)
    assert "sleep 77" not in (await box.exec("ps")).stdout


async def test_shutdown_stops_owned_boxes(server: object, busybox_rootfs: Path) -> None:
    rt = boxlite.Boxlite.rest(server.url, api_key=server.api_key)  # type: ignore[attr-defined]
    box = await rt.create(opts(busybox_rootfs, auto_remove=False))
    await box.start()
    await rt.shutdown()
    with pytest.raises(boxlite.StoppedError):
        await rt.list_info()
    again = boxlite.Boxlite.rest(server.url, api_key=server.api_key)  # type: ignore[attr-defined]
    info = await again.get_info(box.id)
    assert info is not None and info.status == "stopped"
    await again.remove(box.id)
    await again.shutdown()


async def test_images(remote: RemoteBoxlite) -> None:
    assert await remote.images.list() == []
    with pytest.raises(boxlite.NotFoundError):
        await remote.images.remove("example.invalid/none:latest")
    with pytest.raises(boxlite.BoxliteError):
        await remote.images.pull("Not A Reference")
    assert await remote.images.gc() >= 0


def test_one_client_across_event_loops(server: object, busybox_rootfs: Path) -> None:
    """A runtime object keeps working when used from successive ``asyncio.run`` calls."""
    rt = boxlite.Boxlite.rest(server.url, api_key=server.api_key)  # type: ignore[attr-defined]

    async def run_once() -> str:
        async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=rt) as box:
            return (await box.exec("echo", "ok")).stdout

    assert asyncio.run(run_once()) == "ok\n"
    assert asyncio.run(run_once()) == "ok\n"
    asyncio.run(rt.shutdown())
