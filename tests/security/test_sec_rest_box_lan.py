"""A REST client over TCP cannot give its boxes the server's LAN: every box it creates, clones or
imports with network is public-only (private, CGNAT and unique-local networks refused by the host
guard; tests/net/test_allow_net.py shows the refusal), whatever its options say, unless the
operator passes ``--allow-box-lan``. Clients on the unix socket (the server's own user) choose."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import boxlite
from boxlite.remote import RemoteBoxlite
from rest.serverproc import API_KEY, free_port, start_server, stop_server, wait_ready
from support.images import build_busybox_rootfs


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lan") / "rootfs"
    build_busybox_rootfs(path)
    return path


def serve(base: Path, *args: str) -> Iterator[tuple[str, str]]:
    port, sock = free_port(), base / "srv.sock"
    proc = start_server(base / "home", "--host", "127.0.0.1", "--port", str(port), "--api-key", API_KEY,
                        "--socket", str(sock), "--allow-any-host-path", *args)  # fmt: skip
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}")
        yield f"http://127.0.0.1:{port}", f"unix://{sock}"
    finally:
        stop_server(proc)


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    yield from serve(tmp_path_factory.mktemp("lan-default"))


@pytest.fixture(scope="module")
def lan_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    yield from serve(tmp_path_factory.mktemp("lan-allowed"), "--allow-box-lan")


async def _public_only(rt: RemoteBoxlite, options: boxlite.BoxOptions) -> bool:
    box = await rt.create(options)
    try:
        return box.info().network.public_only
    finally:
        await rt.remove(box.id, force=True)


async def test_tcp_clients_boxes_are_public_only(default_server: tuple[str, str], rootfs: Path) -> None:
    tcp = boxlite.Boxlite.rest(default_server[0], api_key=API_KEY)
    try:
        assert await _public_only(tcp, boxlite.BoxOptions(rootfs_path=str(rootfs)))  # the default network
        asked_lan = boxlite.NetworkSpec(allow_net=["10.0.0.0/8"], public_only=False)
        assert await _public_only(tcp, boxlite.BoxOptions(rootfs_path=str(rootfs), network=asked_lan))
        assert not await _public_only(tcp, boxlite.BoxOptions(rootfs_path=str(rootfs), network="disabled"))
    finally:
        await tcp.shutdown(timeout=2)


async def test_a_tcp_clone_of_an_owners_box_is_public_only(default_server: tuple[str, str], rootfs: Path) -> None:
    unix = boxlite.Boxlite.rest(default_server[1], api_key=API_KEY)
    tcp = boxlite.Boxlite.rest(default_server[0], api_key=API_KEY)
    try:
        own = await unix.create(boxlite.BoxOptions(rootfs_path=str(rootfs)), name="owners")
        assert own.info().network.public_only is False  # the owner chooses
        clone = await (await tcp.get("owners")).clone_box(name="clients-clone")  # type: ignore[union-attr]
        assert clone.info().network.public_only is True
        await tcp.remove(clone.id, force=True)
        await unix.remove(own.id, force=True)
    finally:
        await tcp.shutdown(timeout=2)
        await unix.shutdown(timeout=2)


async def test_allow_box_lan_lets_tcp_clients_choose(lan_server: tuple[str, str], rootfs: Path) -> None:
    tcp = boxlite.Boxlite.rest(lan_server[0], api_key=API_KEY)
    try:
        assert not await _public_only(tcp, boxlite.BoxOptions(rootfs_path=str(rootfs)))
        chosen = boxlite.NetworkSpec(public_only=True)
        assert await _public_only(tcp, boxlite.BoxOptions(rootfs_path=str(rootfs), network=chosen))
    finally:
        await tcp.shutdown(timeout=2)
