"""Health checks through ``boxlite serve``: the option travels in the create request, the server
(the box's owner) runs the checks, and its BoxInfo carries the status and the probe log."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import boxlite
from boxlite.api.results import HealthCheckResult
from boxlite.remote import RemoteBoxlite
from rest.serverproc import Server, raw_client


async def test_health_status_over_rest(remote: RemoteBoxlite, busybox_rootfs: Path) -> None:
    check = boxlite.HealthCheckOptions(interval=0.2, timeout=10, retries=1000, start_period=0,  # type: ignore[arg-type]
                                       command=["test", "-f", "/tmp/ready"])  # fmt: skip
    advanced = boxlite.AdvancedBoxOptions(health_check=check)
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=remote, advanced=advanced) as box:  # type: ignore[arg-type]
        info = await remote.get_info(box.id)
        assert info is not None and info.health_status.state.is_starting()
        await box.exec("touch", "/tmp/ready")
        deadline = time.monotonic() + 60
        while not (status := (await remote.get_info(box.id)).health_status).state.is_healthy():  # type: ignore[union-attr]
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.1)
        assert status.checking and status.failures == 0
        assert status.log and status.log[-1].exit_code == 0 and isinstance(status.log[-1], HealthCheckResult)
        listed = [i for i in await remote.list_info() if i.id == box.id]
        assert listed[0].health_status.state.is_healthy()


async def test_invalid_health_check_is_refused(remote: RemoteBoxlite, server: Server, busybox_rootfs: Path) -> None:
    bad = boxlite.AdvancedBoxOptions(health_check=boxlite.HealthCheckOptions(interval=0))
    with pytest.raises(boxlite.ConfigError):
        await remote.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), advanced=bad))
    client = raw_client(server)  # skips the SDK's checks: the server refuses too
    async with client:
        for check in ({"interval": 0.001}, {"command": "true"}, {"retries": -1}, {"bogus": 1}):
            body = {"options": {"rootfs_path": str(busybox_rootfs), "health_check": check}}
            response = await client.post("/v1/boxes", json=body)
            assert response.status_code in (400, 422), (check, response.text)
