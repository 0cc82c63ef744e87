"""Image garbage collection never takes layers that existing boxes stand on."""

from __future__ import annotations

from pathlib import Path

import boxlite


async def test_gc_keeps_layers_of_existing_boxes(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=False))
    await runtime.images.gc()
    async with box:
        assert (await (await box.exec("echo", ["still here"], stdin=False)).stdout().read()) == "still here\n"
    await runtime.remove(box.id)
    assert await runtime.images.gc() > 0  # now nothing uses the imported rootfs layer
