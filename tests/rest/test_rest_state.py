"""Snapshots, clones, export and import through ``boxlite serve`` (BoxLite's REST paths): the same
behaviour as a local runtime; uploads are checked as untrusted archives."""

from __future__ import annotations

from pathlib import Path

import pytest

import boxlite
from boxlite.errors import BoxliteError, InvalidStateError, NotFoundError, ResourceExhaustedError
from boxlite.remote import RemoteBoxlite


async def sh(box: boxlite.Box, script: str) -> str:
    execution = await box.exec("sh", ["-c", script], stdin=False)
    out = await execution.stdout().read()
    assert (await execution.wait()).exit_code == 0
    return str(out)


async def test_snapshots_and_clone_over_rest(remote: RemoteBoxlite, busybox_rootfs: Path) -> None:
    box = await remote.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=False))
    try:
        await sh(box, "echo one > /root/f")
        await box.stop()
        info = await box.snapshot.create(name="s 1?#x")  # a name that needs quoting in the URL
        assert info.name == "s 1?#x" and info.box_id == box.id
        await sh(box, "echo two > /root/f")
        with pytest.raises(InvalidStateError):
            await box.snapshot.restore("s 1?#x")
        await box.stop()
        assert [s.name for s in await box.snapshot.list()] == ["s 1?#x"]
        assert (await box.snapshot.get("s 1?#x")) is not None and await box.snapshot.get("nope") is None
        await box.snapshot.restore("s 1?#x")
        assert await sh(box, "cat /root/f") == "one\n"
        clone = await box.clone_box(name="rest-clone")
        assert await sh(clone, "cat /root/f") == "one\n"
        await box.snapshot.remove("s 1?#x")
        with pytest.raises(NotFoundError):
            await box.snapshot.remove("s 1?#x")
        await remote.remove(clone.id, force=True)
    finally:
        await remote.remove(box.id, force=True)


async def test_export_and_untrusted_import_over_rest(
    remote: RemoteBoxlite, busybox_rootfs: Path, tmp_path: Path
) -> None:
    box = await remote.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=False), name="exp")
    try:
        await sh(box, "echo data > /root/f")
        with pytest.raises(ResourceExhaustedError, match="max_bytes"):  # stopped by the server
            await box.export(dest=str(tmp_path), options=boxlite.ExportOptions(max_bytes=64 << 10))
        path = Path(await box.export(dest=str(tmp_path)))
        assert path == tmp_path / "exp.boxlite" and path.stat().st_size > 0
        assert list(tmp_path.glob(".*")) == []
        copy = await remote.import_box(str(path), name="imported")
        assert await sh(copy, "cat /root/f") == "data\n"
        await remote.remove(copy.id, force=True)
        bare = await box.export(dest=str(tmp_path / "bare.boxlite"), options=boxlite.ExportOptions(include_image=False))
        with pytest.raises(BoxliteError, match="host directory"):  # would make the server read its own path
            await remote.import_box(bare, name="evil")
        data = bytearray(path.read_bytes())
        data[len(data) // 3] ^= 1
        (tmp_path / "bad.boxlite").write_bytes(bytes(data))
        with pytest.raises(BoxliteError):
            await remote.import_box(str(tmp_path / "bad.boxlite"), name="evil")
        assert await remote.get("evil") is None
    finally:
        await remote.remove(box.id, force=True)
