"""A REST client with the API key is not root on the server's host: over TCP it names as volumes
or ``rootfs_path`` only the directories given with ``--allow-host-path``, exactly; over the
server's own unix socket (its owner only) it names any path, as the library would."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import boxlite
from boxlite.remote import RemoteBoxlite
from rest.serverproc import API_KEY, free_port, start_server, stop_server, wait_ready
from support.images import build_busybox_rootfs


@dataclass
class Served:
    tcp: str
    unix: str
    rootfs: Path
    data: Path
    base: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server on TCP and on its unix socket, listing a rootfs and a data directory."""
    base = tmp_path_factory.mktemp("hostpaths")
    rootfs, data, home = base / "rootfs", base / "data", base / "home"
    build_busybox_rootfs(rootfs)
    (data / "sub").mkdir(parents=True)
    (data / "note").write_text("inside\n")
    (base / "outside").mkdir()
    (base / "outside" / "note").write_text("outside\n")
    (base / "to-root").symlink_to("/")
    (base / "to-data").symlink_to(data)
    port, sock = free_port(), base / "srv.sock"
    listed = ("--allow-host-path", str(rootfs), "--allow-host-path", str(data))
    proc = start_server(home, "--host", "127.0.0.1", "--port", str(port), "--api-key", API_KEY,
                        "--socket", str(sock), *listed)  # fmt: skip
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}")
        yield Served(f"http://127.0.0.1:{port}", f"unix://{sock}", rootfs, data, base)
    finally:
        stop_server(proc)


@pytest.fixture
async def tcp(served: Served) -> AsyncIterator[RemoteBoxlite]:
    rt = boxlite.Boxlite.rest(served.tcp, api_key=API_KEY)
    yield rt
    for info in await rt.list_info():
        await rt.remove(info.id, force=True)
    await rt.shutdown(timeout=2)


REFUSED_VOLUMES: list[Any] = [
    ("/", "/host", False),
    "/:/host",
    {"host_path": "/etc", "guest_path": "/etc-host", "read_only": True},
    ["/root", "/r"],
]


@pytest.mark.parametrize("volume", REFUSED_VOLUMES, ids=["tuple", "string", "dict", "list"])
async def test_tcp_client_cannot_mount_a_host_directory(tcp: RemoteBoxlite, served: Served, volume: Any) -> None:
    with pytest.raises(boxlite.PermissionDeniedError, match="not one of the directories"):
        await tcp.create(boxlite.BoxOptions(rootfs_path=str(served.rootfs), volumes=[volume]))
    assert await tcp.list_info() == []  # refused before anything was created


@pytest.mark.parametrize("path", ["/", "/etc", "/nonexistent-dir"])
async def test_tcp_client_cannot_name_a_host_root_filesystem(tcp: RemoteBoxlite, path: str) -> None:
    """Also no oracle: a missing path outside answers as an existing one does."""
    with pytest.raises(boxlite.PermissionDeniedError, match="not one of the directories"):
        await tcp.create(boxlite.BoxOptions(rootfs_path=path))
    assert await tcp.list_info() == []


async def test_escapes_from_an_allowed_directory_are_refused(tcp: RemoteBoxlite, served: Served) -> None:
    """Not a path inside a listed directory either: a box with the directory as a writable volume
    could make ``data/sub`` a symlink to ``/`` after the check and before this box starts."""
    rootfs = str(served.rootfs)
    for host in (f"{served.data}/..", f"{served.data}/sub", f"{served.data}/../to-root", f"{served.base}/to-root"):
        with pytest.raises(boxlite.PermissionDeniedError):
            await tcp.create(boxlite.BoxOptions(rootfs_path=rootfs, volumes=[(host, "/x", True)]))
    with pytest.raises(boxlite.PermissionDeniedError):
        await tcp.create(boxlite.BoxOptions(rootfs_path=f"{served.rootfs}/bin"))
    with pytest.raises(boxlite.ConfigError, match="must be absolute"):
        await tcp.create(boxlite.BoxOptions(rootfs_path=rootfs, volumes=[("data", "/x", True)]))
    assert await tcp.list_info() == []


async def test_listed_directories_work_and_are_pinned(tcp: RemoteBoxlite, served: Served) -> None:
    """A symlink to a listed directory is resolved at create: re-pointing it later does not move the box."""
    link = served.base / "to-data"
    options = boxlite.BoxOptions(rootfs_path=str(served.rootfs), volumes=[(str(link), "/data", True)])
    box = await tcp.create(options)  # configured: the volume is mounted at start, below
    link.unlink()
    link.symlink_to("/")
    try:
        await box.start()
        assert await _run(box, "cat", "/data/note") == (0, "inside\n")
        assert (await _run(box, "ls", "/data/etc"))[0] != 0
    finally:
        link.unlink()
        link.symlink_to(served.data)


async def _run(box: Any, cmd: str, *args: str) -> tuple[int, str]:
    execution = await box.exec(cmd, list(args), stdin=False)
    out = await execution.stdout().read()
    return (await execution.wait()).exit_code, out.decode() if isinstance(out, bytes) else out


async def test_named_volumes_and_images_need_no_listing(tcp: RemoteBoxlite, served: Served) -> None:
    """A named volume lives in the server's home: any client may mount one (id or dict form)."""
    vol = await tcp.volumes.create()
    try:
        mounts = [f"{vol.id}:/a", {"volume_id": vol.id, "mount_path": "/b", "read_only": True}]
        box = await tcp.create(boxlite.BoxOptions(rootfs_path=str(served.rootfs), volumes=mounts))
        await box.start()
        assert await _run(box, "sh", "-c", "echo hi > /a/f && cat /b/f") == (0, "hi\n")
        await tcp.remove(box.id, force=True)
    finally:
        await tcp.volumes.remove(vol.id, force=True)


async def test_unix_socket_client_names_any_path(served: Served) -> None:
    """The socket is its owner's only (0700): that client could run the library itself."""
    assert os.stat(served.unix.removeprefix("unix://")).st_mode & 0o077 == 0
    rt = boxlite.Boxlite.rest(served.unix, api_key=API_KEY)  # a key, when set, is needed on each listener
    rootfs, mount = str(served.rootfs), [(str(served.base / "outside"), "/outside", True)]
    try:
        async with boxlite.SimpleBox(rootfs_path=rootfs, volumes=mount, runtime=rt) as box:  # type: ignore[arg-type]
            assert (await box.exec("cat", "/outside/note")).stdout == "outside\n"
    finally:
        await rt.shutdown(timeout=2)


def test_boxlite_wire_route_answers_permission_denied(served: Served) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=served.tcp, headers=headers, timeout=30) as http:
        boxes = f"/v1/{http.get('/v1/me').json()['path_prefix']}/boxes"  # BoxLite's route, not ours
        for body in (
            {"rootfs_path": str(served.rootfs), "volumes": [{"host_path": "/", "guest_path": "/h"}]},
            {"rootfs_path": "/"},
        ):
            resp = http.post(boxes, json=body)
            assert resp.status_code == 403, resp.text
            assert resp.json()["error"]["code"] == "permission_denied"
        assert http.get(boxes).json()["boxes"] == []


@pytest.mark.parametrize("listed", [["typo"], ["/"], ["outer", "outer/inner"]], ids=["missing", "root", "nested"])
def test_server_refuses_a_bad_list(tmp_path: Path, listed: list[str]) -> None:
    (tmp_path / "outer" / "inner").mkdir(parents=True)
    args = [a for p in listed for a in ("--allow-host-path", p if p == "/" else str(tmp_path / p))]
    proc = start_server(tmp_path / "home", "--host", "127.0.0.1", "--port", str(free_port()), "--api-key", API_KEY,
                        *args)  # fmt: skip
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2, err
    assert any(why in err for why in (b"is not a directory", b"whole host", b"do not nest")), err


def test_server_without_a_list_refuses_every_host_path(tmp_path: Path, busybox_rootfs: Path) -> None:
    port = free_port()
    proc = start_server(tmp_path / "home", "--host", "127.0.0.1", "--port", str(port), "--api-key", API_KEY)
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}")
        headers = {"Authorization": f"Bearer {API_KEY}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as http:
            resp = http.post("/v1/boxes", json={"options": {"rootfs_path": str(busybox_rootfs)}})
            assert resp.status_code == 403 and "no host path" in resp.json()["error"]["message"]
    finally:
        stop_server(proc)
