"""Image garbage collection never takes layers that existing boxes stand on."""

from __future__ import annotations

import boxlite
from support.images import busybox_layout


async def test_gc_keeps_layers_of_existing_boxes(runtime: boxlite.Boxlite) -> None:
    # An OCI layout: its layers are unpacked into the store (a plain directory may be used in place).
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_layout()), auto_remove=False))
    for info in await runtime.images.list():  # no image names the layers any more: only the box
        await runtime.images.remove(info.reference, force=True)
    await runtime.images.gc()
    async with box:
        assert (await (await box.exec("echo", ["still here"], stdin=False)).stdout().read()) == "still here\n"
    await runtime.remove(box.id)
    assert await runtime.images.gc() > 0  # now nothing uses the unpacked layers
