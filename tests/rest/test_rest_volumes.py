"""Named volumes through ``boxlite serve``: ``Boxlite.rest(...).volumes`` raises the same typed
errors as a local runtime, and a box on the server mounts a volume by id."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

import boxlite
from boxlite.remote import RemoteBoxlite
from rest.serverproc import Server


async def test_volumes_through_the_server(remote: RemoteBoxlite, server: Server, busybox_rootfs: Path) -> None:
    vol = await remote.volumes.create()
    assert vol.id.startswith("vol-") and vol.created_at.endswith("Z")
    assert [v.id for v in await remote.volumes.list()] == [vol.id]
    assert (server.home / "volumes" / vol.id / "data").is_dir()  # in the server's home
    mount = [f"{vol.id}:/data"]
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=remote, volumes=mount) as box:  # type: ignore[arg-type]
        assert (await box.exec("sh", "-c", "head -c 100000 /dev/zero > /data/f && echo ok")).stdout == "ok\n"
    assert (server.home / "volumes" / vol.id / "data" / "f").stat().st_size == 100000
    got = await remote.volumes.get(vol.id)
    assert got.id == vol.id and got.size_bytes is not None and got.size_bytes >= 100000
    idle = await remote.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), volumes=mount, auto_remove=False))
    with pytest.raises(boxlite.InvalidStateError):  # 409: a box names it
        await remote.volumes.remove(vol.id)
    await remote.remove(idle.id, force=True)
    await remote.volumes.remove(vol.id)
    assert await remote.volumes.list() == []
    with pytest.raises(boxlite.NotFoundError):
        await remote.volumes.get(vol.id)
    await remote.volumes.remove(vol.id, force=True)
    with pytest.raises(boxlite.NotFoundError):  # unknown ids are refused before a box exists
        await remote.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), volumes=["vol-0000000000000000:/d"]))
    with pytest.raises(boxlite.ConfigError):  # checked by the client: an id never becomes a URL path
        await remote.volumes.get("../boxes")


def test_the_server_checks_ids_itself(server: Server) -> None:
    """A client that skips the id check gets 400 (malformed) or 404 (unknown), never a path."""
    if server.url.startswith("unix://"):
        transport = httpx.HTTPTransport(uds=server.url.removeprefix("unix://"))
        client = httpx.Client(transport=transport, base_url="http://localhost")
    else:
        client = httpx.Client(base_url=server.url)
    headers = {"Authorization": f"Bearer {server.api_key}"} if server.api_key else {}
    with client:
        for malformed in ("vol-..", "vol-0123456789ABCDEF", "vol-0123456789abcdef%00"):
            bad = client.get(f"/v1/volumes/{malformed}", headers=headers)
            assert bad.status_code == 400 and bad.json()["error"]["type"] == "ConfigError", malformed
        missing = client.delete("/v1/volumes/vol-0000000000000000", headers=headers)
        assert missing.status_code == 404
        assert client.delete("/v1/volumes/vol-0000000000000000?force=true", headers=headers).status_code == 204
