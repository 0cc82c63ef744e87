"""Named volumes (``runtime.volumes``): created in the home, mounted by id, outliving boxes;
ids never become paths outside the home, removal never follows a box's symlinks."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import boxlite
from boxlite.runtime import volumes as store
from boxlite.runtime.config import BoxConfig


@pytest.fixture
async def local(home: Path) -> AsyncIterator[boxlite.Boxlite]:
    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine="namespace"))
    yield rt
    await rt.shutdown(timeout=2)


async def test_create_list_get_remove(local: boxlite.Boxlite, home: Path) -> None:
    a = await local.volumes.create()
    b = await local.volumes.create()
    assert re.fullmatch(r"vol-[0-9a-f]{16}", a.id) and a.id != b.id
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", a.created_at)
    assert sorted(v.id for v in await local.volumes.list()) == sorted([a.id, b.id])
    data = home / "volumes" / a.id / "data"
    (data / "blob").write_bytes(os.urandom(64 * 1024))
    got = await local.volumes.get(a.id)
    assert got.created_at == a.created_at and got.size_bytes is not None and got.size_bytes >= 64 * 1024
    await local.volumes.remove(a.id)
    assert not (home / "volumes" / a.id).exists()
    assert [v.id for v in await local.volumes.list()] == [b.id]
    with pytest.raises(boxlite.NotFoundError):
        await local.volumes.get(a.id)
    with pytest.raises(boxlite.NotFoundError):
        await local.volumes.remove(a.id)
    await local.volumes.remove(a.id, force=True)  # force: a missing volume is success


@pytest.mark.parametrize("bad", ["../x", "vol-../x", "vol-0123456789abcdef/..", "vol-0123456789ABCDEF", "/etc", ""])
async def test_malformed_ids_are_config_errors(local: boxlite.Boxlite, bad: str, busybox_rootfs: Path) -> None:
    with pytest.raises(boxlite.ConfigError):
        await local.volumes.get(bad)
    with pytest.raises(boxlite.ConfigError):
        await local.volumes.remove(bad, force=True)


async def test_box_options_spell_a_volume_by_id_only(local: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    vid = (await local.volumes.create()).id
    config = boxlite.BoxOptions(volumes=[f"{vid}:/data:ro", {"volume_id": vid, "mount_path": "/b"}]).to_config()
    assert [(v.volume_id, v.guest_path, v.read_only) for v in config.volumes] == [
        (vid, "/data", True),
        (vid, "/b", False),
    ]
    assert BoxConfig.from_json(config.to_json()) == config  # stored with the box
    rel = boxlite.BoxOptions(volumes=[f"./{vid}:/data"]).to_config().volumes[0]  # a relative host path, spelt so
    assert rel.volume_id is None and rel.host_path == os.path.abspath(vid)
    for bad in ["vol-x:/data", f"{vid}/..:/data", {"volume_id": "../x", "mount_path": "/d"}]:
        with pytest.raises(boxlite.ConfigError):
            boxlite.BoxOptions(volumes=[bad]).to_config()
    with pytest.raises(boxlite.UnsupportedOptionError):
        boxlite.BoxOptions(volumes=[{"volume_id": vid, "mount_path": "/d", "subpath": "x"}]).to_config()
    with pytest.raises(boxlite.NotFoundError):  # unknown: refused at create, nothing is left
        await local.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), volumes=["vol-0000000000000000:/d"]))
    assert await local.list_info() == []


async def test_a_volume_named_by_a_box_is_kept(local: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    """No boot needed: a created (never started) box names the volume."""
    vid = (await local.volumes.create()).id
    opts = boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), volumes=[f"{vid}:/data"], auto_remove=False)
    box = await local.create(opts)
    with pytest.raises(boxlite.InvalidStateError, match=box.id):
        await local.volumes.remove(vid)
    await local.volumes.remove(vid, force=True)  # force: allowed while the box is not running
    with pytest.raises(boxlite.NotFoundError, match=f"{vid}.*removed"):
        await box.start()
    await local.remove(box.id, force=True)


async def test_a_removal_waits_for_a_start_in_progress(
    local: boxlite.Boxlite, home: Path, busybox_rootfs: Path
) -> None:
    """A box of another runtime of the home being created or started with the volume holds it:
    a removal waits, then sees the box running and refuses (it checked, then deleted, before: a
    start between the two got a volume deleted under it)."""
    import asyncio

    vid = (await local.volumes.create()).id
    (home / "volumes" / vid / "data" / "keep").write_text("kept")
    opts = boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), volumes=[f"{vid}:/data"])
    other = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine="namespace"))
    try:
        async with store.VolumeStore(home).using(opts.to_config()):  # a create/start in progress elsewhere
            removal = asyncio.create_task(local.volumes.remove(vid, force=True))
            await asyncio.sleep(0.5)
            assert not removal.done()
            box = await other.create(opts)  # shared holds coexist
            await box.start()
        with pytest.raises(boxlite.InvalidStateError, match="mounted by"):
            await removal
        assert (await (await box.exec("cat", ["/data/keep"])).wait()).exit_code == 0
        await box.stop()
        await local.volumes.remove(vid, force=True)  # stopped: force lets it go
        assert not (home / "volumes" / vid).exists()
    finally:
        await other.shutdown(timeout=2)


async def test_removal_never_follows_symlinks(local: boxlite.Boxlite, home: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("host data\n")
    vid = (await local.volumes.create()).id
    data = home / "volumes" / vid / "data"
    os.symlink(victim, data / "dirlink")
    os.symlink(victim / "keep", data / "filelink")
    (data / "deep" / "er").mkdir(parents=True)
    os.symlink(victim, data / "deep" / "er" / "up")
    assert (await local.volumes.get(vid)).size_bytes is not None  # sizes do not follow either
    await local.volumes.remove(vid)
    assert (victim / "keep").read_text() == "host data\n"
    assert not (home / "volumes" / vid).exists()


async def test_caps(local: boxlite.Boxlite, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "MAX_VOLUMES", 2)
    first = await local.volumes.create()
    await local.volumes.create()
    with pytest.raises(boxlite.ResourceExhaustedError):
        await local.volumes.create()
    monkeypatch.setattr(store, "SIZE_MAX_ENTRIES", 3)
    data = home / "volumes" / first.id / "data"
    for i in range(5):
        (data / str(i)).touch()
    assert (await local.volumes.get(first.id)).size_bytes is None  # too many to count: unknown, not wrong


def test_sync_mirror(home: Path) -> None:
    with boxlite.SyncBoxlite(boxlite.Options(home_dir=str(home), engine="namespace")) as rt:
        info = rt.volumes.create()
        assert [v.id for v in rt.volumes.list()] == [info.id] and rt.volumes.get(info.id).id == info.id
        rt.volumes.remove(info.id)
        assert rt.volumes.list() == []


async def test_data_outlives_the_box_on_each_engine(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, tmp_path: Path
) -> None:
    """One box writes (and plants links to a host file), is removed; another reads; the
    volume cannot go while that box runs; removing it afterwards leaves the host file alone."""
    victim = tmp_path / "victim.txt"
    victim.write_text("host file\n")
    vid = (await runtime.volumes.create()).id
    write = f"echo persisted > /data/f && ln -s {victim} /data/link && ln -s {tmp_path} /data/dirlink"
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime, volumes=[f"{vid}:/data"]) as box:
        assert (await box.exec("sh", "-c", write)).exit_code == 0
    mount = {"volume_id": vid, "mount_path": "/v", "read_only": True}
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime, volumes=[mount]) as box:
        seen = await box.exec("sh", "-c", "cat /v/f; touch /v/x 2>/dev/null || echo read-only")
        assert seen.stdout == "persisted\nread-only\n"
        with pytest.raises(boxlite.InvalidStateError):
            await runtime.volumes.remove(vid, force=True)  # never under a running box
    assert (await runtime.volumes.get(vid)).size_bytes
    await runtime.volumes.remove(vid)
    assert victim.read_text() == "host file\n" and victim.parent.is_dir()
