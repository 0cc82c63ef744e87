"""What creating a box through the Ray cluster costs in node calls, and what lazy creation means.

* an unnamed box is placed at ``create`` and made by its first command: no call at ``create``,
  one (``exec_begin``) up to the first command's exit; a named box is made at ``create`` (two calls);
  the next exec is one call; a box stopped since is made ready first (one readiness call);
* a lazily created box is only this driver's until its first use: other drivers see it after;
  removing it before is free; a node that refused it at first use (another driver filled it)
  is replaced by one with room, and a box its node cannot make (missing rootfs) raises that
  error at first use and can still be removed;
* a box that fails to start on its first exec raises the same typed error as locally
  (``ConfigError`` naming the missing volume), and a box removed by another driver before its
  first exec is ``NotFoundError``.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from raycluster import RayCluster

import boxlite
from boxlite.backends.ray import backend as ray_backend
from boxlite.errors import ConfigError, NotFoundError

pytestmark = [pytest.mark.namespace_only, pytest.mark.timeout(300)]


@pytest.fixture
async def rt(cluster: RayCluster, engine: str) -> AsyncIterator[boxlite.Boxlite]:
    runtime = cluster.runtime(engine, exec_wait=1.0)  # a short command ends within one call, even under load
    yield runtime
    await runtime.shutdown(timeout=2)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The node-service methods the driver calls (``call`` ones as ``call:<method>``)."""
    seen: list[str] = []
    call, call_raw = ray_backend.NodeRef.call, ray_backend.NodeRef.call_raw

    async def counted_call(self: Any, method: str, *args: Any, **kw: Any) -> Any:
        seen.append(f"call:{method}")
        return await call(self, method, *args, **kw)

    async def counted_raw(self: Any, method: str, *args: Any, **kw: Any) -> Any:
        if method != "hello":  # placement's load view (refreshed at most every second)
            seen.append(method)
        return await call_raw(self, method, *args, **kw)

    monkeypatch.setattr(ray_backend.NodeRef, "call", counted_call)
    monkeypatch.setattr(ray_backend.NodeRef, "call_raw", counted_raw)
    return seen


def _opts(rootfs: Path, **kw: Any) -> boxlite.BoxOptions:
    return boxlite.BoxOptions(rootfs_path=str(rootfs), cpus=0.25, network="disabled", **kw)


async def test_create_and_first_exec_are_one_call(rt: boxlite.Boxlite, busybox_rootfs: Path, calls: list[str]) -> None:
    box = await rt.create(_opts(busybox_rootfs, auto_remove=False))  # kept when stopped
    try:
        assert not box.info().state.running  # created, not started
        assert calls == []  # placed: made by its first use
        run = await box.exec("sh", ["-c", "echo up"])
        assert await run.stdout().read() == "up\n"
        assert (await run.wait()).exit_code == 0
        assert calls == ["exec_begin"]  # the node made the box and started it for it
        assert box.info().state.running
        calls.clear()
        await (await box.exec("true")).wait()
        assert calls == ["exec_begin"]

        await box.stop()
        calls.clear()
        assert (await (await box.exec("true")).wait()).exit_code == 0
        assert calls == ["call:ready", "exec_begin"]  # stopped since: made ready first, as before
    finally:
        await rt.remove(box.id, force=True)


async def test_a_start_failure_on_the_first_exec_keeps_its_type(
    rt: boxlite.Boxlite, cluster: RayCluster, busybox_rootfs: Path, tmp_path: Path, engine: str
) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    box = await rt.create(_opts(busybox_rootfs, volumes=[(str(vol), "/mnt", False)], auto_remove=False))
    try:
        shutil.rmtree(vol)
        with pytest.raises(ConfigError, match="does not exist"):
            await box.exec("true")
    finally:
        await rt.remove(box.id, force=True)

    gone = await rt.create(_opts(busybox_rootfs), name="gone")  # named: made at create, others see it
    other = cluster.runtime(engine)
    try:
        await other.remove(gone.id, force=True)  # another driver removes it before its first exec
        with pytest.raises(NotFoundError):
            await gone.exec("true")
    finally:
        await other.shutdown(timeout=2)


async def test_a_named_box_is_made_at_create(rt: boxlite.Boxlite, busybox_rootfs: Path, calls: list[str]) -> None:
    box = await rt.create(_opts(busybox_rootfs), name="named-now")
    try:
        assert calls[-1] == "create"  # after asking the nodes whether the name is taken
        calls.clear()
        await (await box.exec("true")).wait()
        assert calls == ["exec_begin"]
    finally:
        await rt.remove(box.id, force=True)


async def test_lazy_boxes_are_seen_by_others_after_first_use(
    rt: boxlite.Boxlite, cluster: RayCluster, busybox_rootfs: Path, engine: str, calls: list[str]
) -> None:
    other = cluster.runtime(engine)
    try:
        box = await rt.create(_opts(busybox_rootfs))
        assert [i.id for i in await rt.list_info() if i.id == box.id] == [box.id]  # its own driver lists it
        assert await other.get_info(box.id) is None  # not made yet
        unused = await rt.create(_opts(busybox_rootfs))
        await rt.remove(unused.id)
        assert await rt.get(unused.id) is None
        assert (await (await box.exec("true")).wait()).exit_code == 0
        seen = await other.get_info(box.id)
        assert seen is not None and seen.state.running
        assert calls.count("exec_begin") == 1 and "create" not in calls
        await rt.remove(box.id, force=True)
        assert await other.get_info(box.id) is None
    finally:
        await other.shutdown(timeout=2)


async def test_first_use_on_a_node_filled_since_goes_elsewhere(
    cluster: RayCluster, busybox_rootfs: Path, engine: str
) -> None:
    lazy = cluster.runtime(engine, strategy="pack", max_boxes_per_node=2)
    eager = cluster.runtime(engine, strategy="pack", max_boxes_per_node=2, lazy_create=False)
    made: list[boxlite.Box] = []
    try:
        box = await lazy.create(_opts(busybox_rootfs))  # pack, empty nodes: the same node as ``eager`` picks
        placed = lazy._backend.node_of(box.id)  # type: ignore[attr-defined]
        made = [await eager.create(_opts(busybox_rootfs)) for _ in range(2)]
        assert {eager._backend.node_of(b.id) for b in made} == {placed}  # type: ignore[attr-defined]
        assert (await (await box.exec("true")).wait()).exit_code == 0  # refused there: made on another node
        assert lazy._backend.node_of(box.id) not in (None, placed)  # type: ignore[attr-defined]
        assert (await eager.get(box.id)) is not None
        await lazy.remove(box.id, force=True)
    finally:
        for b in made:
            await eager.remove(b.id, force=True)
        await lazy.shutdown(timeout=2)
        await eager.shutdown(timeout=2)


async def test_a_box_its_node_cannot_make_fails_at_first_use(
    rt: boxlite.Boxlite, tmp_path: Path, calls: list[str]
) -> None:
    box = await rt.create(boxlite.BoxOptions(rootfs_path=str(tmp_path / "missing"), network="disabled"))
    with pytest.raises(NotFoundError, match="not a directory"):
        await box.exec("true")
    with pytest.raises(NotFoundError, match="not a directory"):  # each use tries again
        await box.exec("true")
    assert calls == ["exec_begin", "exec_begin"]
    await rt.remove(box.id)
    assert await rt.get(box.id) is None
