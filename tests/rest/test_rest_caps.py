"""``advanced.capabilities`` through ``boxlite serve``: the policy travels in the create request
and the server applies (or refuses) it like the local runtime."""

from __future__ import annotations

from pathlib import Path

import pytest

import boxlite
from boxlite.remote import RemoteBoxlite
from rest.serverproc import Server, raw_client

DOCKER_DEFAULT = 0xA80425FB


async def test_capabilities_over_rest(remote: RemoteBoxlite, busybox_rootfs: Path) -> None:
    caps = boxlite.ContainerCapabilities(drop=["cap_chown"])
    advanced = boxlite.AdvancedBoxOptions(capabilities=caps)
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=remote, advanced=advanced) as box:  # type: ignore[arg-type]
        status = (await box.exec("grep", "CapEff", "/proc/self/status")).stdout
        assert status == f"CapEff:\t{DOCKER_DEFAULT & ~1:016x}\n"
        denied = await box.exec("chown", "1000", "/etc/hostname")
        assert denied.exit_code != 0 and "Operation not permitted" in denied.stderr


async def test_refused_capabilities_over_rest(remote: RemoteBoxlite, server: Server, busybox_rootfs: Path) -> None:
    bad = boxlite.AdvancedBoxOptions(capabilities=boxlite.ContainerCapabilities(add=["SYS_ADMIN"]))
    with pytest.raises(boxlite.UnsupportedOptionError):
        await remote.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), advanced=bad))
    client = raw_client(server)  # skips the SDK's checks: the server refuses too
    async with client:
        bodies: list[dict[str, object]] = [
            {"add": ["SYS_ADMIN"]},
            {"add": ["ALL"]},
            {"drop": ["BOGUS"]},
            {"add": "CHOWN"},
        ]
        for caps in [*bodies, {"x": []}, {"add": ["CHOWN"] * 65}]:
            body = {"options": {"rootfs_path": str(busybox_rootfs), "capabilities": caps}}
            response = await client.post("/v1/boxes", json=body)
            assert 400 <= response.status_code < 600 and response.status_code != 500, (caps, response.text)
        assert (await remote.list_info()) == []
