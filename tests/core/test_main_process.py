"""A box's main process (BoxOptions entrypoint/cmd) runs detached, its output in a log."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import boxlite

pytestmark = pytest.mark.namespace_only


async def test_cmd_runs_in_background_and_logs(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    opts = boxlite.BoxOptions(
        rootfs_path=str(busybox_rootfs),
        cmd=["sh", "-c", "echo started; echo $GREETING; while true; do sleep 1; done"],
        env=[("GREETING", "hi there")],
        auto_remove=False,
    )
    box = await runtime.create(opts)
    await box.start()
    log = runtime.home.box_dir(box.id) / "run" / "main.log"
    for _ in range(100):
        if log.exists() and "hi there" in log.read_text():
            break
        await asyncio.sleep(0.05)
    assert log.read_text().startswith("started\nhi there\n")
    ps = await (await box.exec("ps", stdin=False)).stdout().read()
    assert "while true" in ps or "sleep 1" in ps
    await box.stop()
    await box.start()  # the main process starts again with the box
    ps = await (await box.exec("ps", stdin=False)).stdout().read()
    assert "sleep" in ps
    await runtime.remove(box.id, force=True)


async def test_boxes_without_cmd_have_no_main_process(box: boxlite.SimpleBox) -> None:
    ps = await box.exec("ps")
    assert [line for line in ps.stdout.splitlines()[1:] if "ps" not in line and "agent" not in line] == []


async def test_box_exits_with_its_main_process(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), cmd=["true"], auto_remove=False))
    await box.start()
    for _ in range(200):
        if not box.info().state.running:
            break
        await asyncio.sleep(0.05)
    assert (box.info().state.status, box.info().state.exit_code) == ("exited", 0)
    await runtime.remove(box.id, force=True)
