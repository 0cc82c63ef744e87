"""Issue 10 behaviour through ``boxlite serve``: the same results as a local runtime (exec
timeout as a result, copy_in placement and overwrite=False, newest-first listing, rejected
auto_remove+detach, network on by default)."""

from __future__ import annotations

from pathlib import Path

import pytest

import boxlite
from boxlite.remote import RemoteBoxlite


async def test_exec_timeout_and_copy_in_options(box: boxlite.SimpleBox, tmp_path: Path) -> None:
    result = await box.exec("sh", "-c", "echo before; sleep 30", timeout=2)  # time for the echo under load
    assert result.timed_out and result.exit_code != 0 and result.stdout == "before\n"
    src = tmp_path / "proj"
    src.mkdir()
    (src / "a.txt").write_text("one\n")
    await box.exec("mkdir", "-p", "/app")
    await box.copy_in(str(src), "/app")
    assert (await box.exec("cat", "/app/proj/a.txt")).stdout == "one\n"
    (src / "a.txt").write_text("two\n")
    await box.copy_in(str(src), "/app", overwrite=False)
    assert (await box.exec("cat", "/app/proj/a.txt")).stdout == "one\n"
    await box.copy_in(str(src), "/app")
    assert (await box.exec("cat", "/app/proj/a.txt")).stdout == "two\n"
    routes = (await box.exec("cat", "/proc/net/route")).stdout.splitlines()[1:]
    assert any(row.split()[1] == "00000000" for row in routes)  # network on by default


async def test_listing_order_and_rejected_detach(remote: RemoteBoxlite, busybox_rootfs: Path) -> None:
    opts = boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=False)
    first, second = await remote.create(opts), await remote.create(opts)
    try:
        ids = [info.id for info in await remote.list_info()]
        assert ids.index(second.id) < ids.index(first.id)
        assert len(first.id) == 12 and first.id.isalnum()
        with pytest.raises(boxlite.ConfigError, match="detach"):
            await remote.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=True, detach=True))
    finally:
        for b in (first, second):
            await remote.remove(b.id, force=True)
