"""copy_in through a Ray node service: a refused upload always answers, and ends its box side.

A node ends an upload over its limit by cancelling the upload's box side (the untar). Python
3.11's ``asyncio.wait_for`` drops a cancellation that arrives together with the answer it awaits
(here: the untar's start), so the cancellation alone could be lost and the refusal hang its driver
forever; the node also ends the upload's chunk queue, and answers within a grace period.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterable
from pathlib import Path

import pytest
from raycluster import RayCluster

import boxlite
from boxlite.backends.ray.node import CHUNK, NodeService
from boxlite.errors import RequestTooLargeError

pytestmark = pytest.mark.namespace_only


async def test_a_refused_upload_answers_even_if_its_cancellation_is_lost(tmp_path: Path) -> None:
    ended = asyncio.Event()

    async def untar_losing_its_cancellation(box_id: str, chunks: AsyncIterable[bytes], *args: object) -> None:
        try:
            await asyncio.sleep(3600)  # starting the untar, when the cancellation comes
        except asyncio.CancelledError:
            pass  # lost, as wait_for loses one that coincides with its answer
        try:
            async for _ in chunks:
                pass
        finally:
            ended.set()

    node = NodeService("n0", str(tmp_path / "home"), "namespace")
    node.local.copy_in = untar_losing_its_cancellation  # type: ignore[method-assign]
    upload = await node.copy_in_open("box", "/tmp/", "x", False, True, 100_000)
    assert upload[0] == "ok"
    await asyncio.sleep(0.01)  # the untar has started
    refusal = asyncio.ensure_future(node.copy_in_chunk(upload[1], b"x" * CHUNK))
    done, _ = await asyncio.wait({refusal}, timeout=5)  # not wait_for: its cancellation could be swallowed
    refusal.cancel()
    assert done, "the refusal of an upload over its limit did not answer"
    kind, error = refusal.result()
    assert kind == "err" and error["error"]["type"] == "RequestTooLargeError"
    await asyncio.wait_for(ended.wait(), 5)  # the box side ended too
    assert node._uploads == {}


@pytest.mark.timeout(300)
async def test_refused_uploads_never_hang_on_a_real_node(
    cluster: RayCluster, busybox_rootfs: Path, engine: str, tmp_path: Path
) -> None:
    rt = cluster.runtime(engine)
    try:
        box = await rt.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), cpus=0.25, network="disabled"))
        await (await box.exec("true")).wait()
        src = tmp_path / "in"
        src.mkdir()
        (src / "a.bin").write_bytes(os.urandom(600_000))
        capped = await cluster.runtime(engine, max_transfer_bytes=100_000).get(box.id)
        assert capped is not None
        for _ in range(100):  # a lost cancellation hung ~1 upload in 250 here
            with pytest.raises(RequestTooLargeError):
                await asyncio.wait_for(capped.copy_in(str(src), "/tmp/up/"), 20)
        assert (await (await box.exec("echo", ["still"])).stdout().read()).strip() == "still"
    finally:
        await rt.shutdown()
