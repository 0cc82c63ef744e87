"""Creating a box through the Ray cluster costs two node calls up to its first command's exit.

* ``create`` then the first ``exec`` are the only node-service calls (the node starts the box on
  that exec: no separate readiness call); the next exec is one call too;
* a box stopped since is made ready again before its next exec (one readiness call);
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


async def test_create_and_first_exec_are_two_calls(rt: boxlite.Boxlite, busybox_rootfs: Path, calls: list[str]) -> None:
    box = await rt.create(_opts(busybox_rootfs, auto_remove=False))  # kept when stopped
    try:
        assert not box.info().state.running  # created, not started
        calls.clear()
        run = await box.exec("sh", ["-c", "echo up"])
        assert await run.stdout().read() == "up\n"
        assert (await run.wait()).exit_code == 0
        assert calls == ["exec_begin"]  # the node started the box for it
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

    gone = await rt.create(_opts(busybox_rootfs))
    other = cluster.runtime(engine)
    try:
        await other.remove(gone.id, force=True)  # another driver removes it before its first exec
        with pytest.raises(NotFoundError):
            await gone.exec("true")
    finally:
        await other.shutdown(timeout=2)
