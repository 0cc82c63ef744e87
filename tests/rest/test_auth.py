"""TCP needs an API key: without it or with a wrong one the server answers 401 and runs nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import boxlite
from boxlite.remote import UnauthorizedError
from boxlite.server.listen import check_auth
from rest.serverproc import API_KEY, Server, free_port, serving_tcp, start_server, stop_server, wait_ready


@pytest.fixture(scope="module")
def tcp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving_tcp(tmp_path_factory.mktemp("auth") / "home") as server:
        yield server


@pytest.mark.parametrize("key", [None, "wrong-key"])
async def test_bad_key_is_refused_and_nothing_runs(tcp_server: Server, busybox_rootfs: Path, key: str | None) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"options": {"rootfs_path": str(busybox_rootfs)}, "name": "intruder"}
    async with httpx.AsyncClient(base_url=tcp_server.url, headers=headers) as client:
        resp = await client.post("/v1/boxes", json=body)
        assert resp.status_code == 401 and resp.headers["www-authenticate"] == "Bearer"
        assert (await client.get("/v1/boxes")).status_code == 401
        assert (await client.get("/v1/health")).status_code == 200
    intruder = boxlite.Boxlite.rest(tcp_server.url, api_key=key)
    with pytest.raises(UnauthorizedError):
        await intruder.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs)))
    owner = boxlite.Boxlite.rest(tcp_server.url, api_key=API_KEY)
    box = await owner.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=False))
    before = (await owner.metrics()).total_commands_executed
    with pytest.raises(UnauthorizedError):
        await intruder.get(box.id)
    stolen = boxlite.remote.RemoteBox(intruder, await owner.get_info(box.id))  # type: ignore[arg-type]
    with pytest.raises(UnauthorizedError):
        await stolen.exec("touch", ["/pwned"])
    assert (await owner.metrics()).total_commands_executed == before
    assert [i.id for i in await owner.list_info()] == [box.id]
    assert (await owner.get_info(box.id)).status == "configured"  # type: ignore[union-attr]
    await owner.remove(box.id, force=True)
    await owner.shutdown()
    await intruder.shutdown()


def test_tcp_without_key_is_refused() -> None:
    with pytest.raises(boxlite.ConfigError, match="API key"):
        check_auth("127.0.0.1", 8080, None, False)
    with pytest.raises(boxlite.ConfigError, match="loopback"):
        check_auth("0.0.0.0", 8080, None, True)
    check_auth("127.0.0.1", 8080, None, True)
    check_auth("::1", None, None, True)
    check_auth(None, None, None, False)  # unix socket only


def test_serve_refuses_tcp_without_key(tmp_path: Path) -> None:
    proc = start_server(tmp_path / "home", "--host", "0.0.0.0", "--port", str(free_port()))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and b"API key" in err


async def test_insecure_no_auth_on_loopback(tmp_path: Path) -> None:
    port = free_port()
    proc = start_server(tmp_path / "home", "--host", "127.0.0.1", "--port", str(port), "--insecure-no-auth")
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}")
        rt = boxlite.Boxlite.rest(f"http://127.0.0.1:{port}")
        assert await rt.list_info() == []
        await rt.shutdown()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/v1/boxes")).status_code == 200
            # what a web page could send: cross-origin requests, DNS rebinding
            assert (await client.get("/v1/boxes", headers={"Origin": "https://evil.example"})).status_code == 403
            assert (await client.get("/v1/boxes", headers={"Host": "evil.example:80"})).status_code == 403
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus

        with pytest.raises(InvalidStatus):
            await connect(f"ws://127.0.0.1:{port}/v1/boxes/x/exec", origin="https://evil.example")  # type: ignore[arg-type]
    finally:
        stop_server(proc)
