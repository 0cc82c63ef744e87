"""A REST client cannot make the server connect into its own network by naming an image: pulls
for TCP clients reach public addresses, the hosts listed with ``--allow-registry`` and the home's
configured registries only, whether the address comes from the reference, a token realm or a
redirect, and are refused before any connection is made. Clients on the server's unix socket
(its owner) pull from anywhere, as the library does.

Every address here is on loopback: the "internal service" is a canary server of the test that
counts the connections it receives."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

import boxlite
from boxlite.images.registry_access import RegistryAccess, is_public, parse_entry
from boxlite.remote import RemoteBoxlite
from rest.serverproc import API_KEY, SRC, free_port, start_server, stop_server, wait_ready


class Canary(ThreadingHTTPServer):
    """An HTTP server on loopback counting connections; its answers come from ``reply``."""

    daemon_threads = True

    def __init__(self, reply: Any) -> None:
        self.connections = 0
        self.paths: list[str] = []
        self.reply = reply
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.paths.append(self.path)
                status, headers = owner.reply(self.path)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.connections += 1
        return True


@pytest.fixture(scope="module")
def canary() -> Iterator[Canary]:
    """The internal service a client must not reach: answers 404 to everything."""
    server = Canary(lambda path: (404, {}))
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def lure(canary: Canary) -> Iterator[Canary]:
    """A registry the operator configured, turned hostile: its token realm and its redirects
    point at the canary."""
    target = f"http://127.0.0.1:{canary.port}"

    def reply(path: str) -> tuple[int, dict[str, str]]:
        if path.startswith("/v2/realm/"):
            return 401, {"WWW-Authenticate": f'Bearer realm="{target}/token?scope=admin",service="x"'}
        if path.startswith("/v2/redirect/"):
            return 307, {"Location": f"{target}/internal/api?delete=all"}
        return 404, {}

    server = Canary(reply)
    yield server
    server.shutdown()


@dataclass
class Served:
    tcp: str
    unix: str


@contextlib.contextmanager
def serving(base: Path, lure: Canary, *args: str) -> Iterator[Served]:
    """A server on TCP (with the key) and on its unix socket; ``lure`` is a configured registry."""
    home = base / "home"
    home.mkdir()
    registries = [{"host": f"127.0.0.1:{lure.port}", "transport": "http"}]
    (home / "config.json").write_text(json.dumps({"image_registries": registries}))
    port, sock = free_port(), base / "srv.sock"
    proc = start_server(home, "--host", "127.0.0.1", "--port", str(port), "--api-key", API_KEY,
                        "--socket", str(sock), *args)  # fmt: skip
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}")
        yield Served(f"http://127.0.0.1:{port}", f"unix://{sock}")
    finally:
        stop_server(proc)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, lure: Canary) -> Iterator[Served]:
    """The default: no --allow-registry."""
    with serving(tmp_path_factory.mktemp("registries"), lure) as s:
        yield s


@pytest.fixture
async def tcp(served: Served) -> AsyncIterator[RemoteBoxlite]:
    rt = boxlite.Boxlite.rest(served.tcp, api_key=API_KEY)
    yield rt
    await rt.shutdown(timeout=2)


INTERNAL = ["127.0.0.1:{port}/x:1", "localhost:{port}/x:1", "[::ffff:127.0.0.1]:{port}/x:1", "127.0.0.2:{port}/x:1"]


@pytest.mark.parametrize("ref", INTERNAL, ids=["ipv4", "name", "mapped-v6", "loopback-range"])
async def test_tcp_client_cannot_pull_from_a_loopback_address(tcp: RemoteBoxlite, canary: Canary, ref: str) -> None:
    before = canary.connections
    with pytest.raises(boxlite.PermissionDeniedError, match="not at a public address"):
        await tcp.images.pull(ref.format(port=canary.port))
    assert canary.connections == before  # refused before connecting


async def test_tcp_client_cannot_create_a_box_from_an_internal_registry(tcp: RemoteBoxlite, canary: Canary) -> None:
    before = canary.connections
    with pytest.raises(boxlite.PermissionDeniedError):
        await tcp.create(boxlite.BoxOptions(image=f"127.0.0.1:{canary.port}/x:1"))
    assert canary.connections == before and await tcp.list_info() == []


@pytest.mark.parametrize("repo", ["realm", "redirect"])
async def test_a_configured_registry_cannot_send_the_pull_inward(
    tcp: RemoteBoxlite, canary: Canary, lure: Canary, repo: str
) -> None:
    """The home's registry is allowed; the token realm / redirect target it names is not."""
    before, asked = canary.connections, len(lure.paths)
    with pytest.raises(boxlite.PermissionDeniedError):
        await tcp.images.pull(f"127.0.0.1:{lure.port}/{repo}/x:1")
    assert len(lure.paths) > asked and lure.paths[-1].startswith(f"/v2/{repo}/")
    assert canary.connections == before


async def test_boxlite_routes_answer_permission_denied(served: Served, canary: Canary) -> None:
    before = canary.connections
    ref = f"127.0.0.1:{canary.port}/x:1"
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=f"{served.tcp}/v1/default", headers=headers, timeout=30) as http:
        for path, body in (("/images/pull", {"reference": ref}), ("/boxes", {"image": ref})):
            r = await http.post(path, json=body)
            assert r.status_code == 403, r.text
            assert r.json()["error"]["code"] == "permission_denied"
    assert canary.connections == before


async def test_unix_socket_client_pulls_from_anywhere(served: Served, canary: Canary) -> None:
    rt = boxlite.Boxlite.rest(served.unix, api_key=API_KEY)  # the key is asked on every listener
    try:
        before = canary.connections
        with pytest.raises(boxlite.ImageError) as info:  # an https pull of a plain HTTP server fails
            await rt.images.pull(f"127.0.0.1:{canary.port}/x:1")
        assert not isinstance(info.value, boxlite.PermissionDeniedError)
        assert canary.connections > before
    finally:
        await rt.shutdown(timeout=2)


async def test_listed_registry_is_reached(tmp_path: Path, canary: Canary, lure: Canary) -> None:
    """--allow-registry HOST:PORT: the pull and the redirect to it connect."""
    with serving(tmp_path, lure, "--allow-registry", f"127.0.0.1:{canary.port}") as s:
        rt = boxlite.Boxlite.rest(s.tcp, api_key=API_KEY)
        try:
            before = len(canary.paths)
            with pytest.raises(boxlite.ImageError) as info:  # the canary answers 404
                await rt.images.pull(f"127.0.0.1:{lure.port}/redirect/x:1")
            assert not isinstance(info.value, boxlite.PermissionDeniedError)
            assert canary.paths[before:] == ["/internal/api?delete=all"]
            with pytest.raises(boxlite.PermissionDeniedError):  # another port of the same host is not listed
                await rt.images.pull(f"127.0.0.1:{free_port()}/x:1")
        finally:
            await rt.shutdown(timeout=2)


async def test_allow_any_registry_lifts_the_limit(tmp_path: Path, canary: Canary, lure: Canary) -> None:
    with serving(tmp_path, lure, "--allow-any-registry") as s:
        rt = boxlite.Boxlite.rest(s.tcp, api_key=API_KEY)
        try:
            before = canary.connections
            with pytest.raises(boxlite.ImageError) as info:
                await rt.images.pull(f"localhost:{canary.port}/x:1")
            assert not isinstance(info.value, boxlite.PermissionDeniedError)
            assert canary.connections > before
        finally:
            await rt.shutdown(timeout=2)


@pytest.mark.parametrize("entry", ["http://example.test", "host/path", "host:99999", "user@host", ""])
def test_a_malformed_allow_registry_stops_the_server(tmp_path: Path, entry: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "boxlite.server", "--home", str(tmp_path / "h"), "--socket", str(tmp_path / "s"),
         "--allow-registry", entry],
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "give HOST or HOST:PORT" in proc.stderr, proc.stderr


ADDRESSES = {
    "8.8.8.8": True, "2001:4860:4860::8888": True, "127.0.0.1": False, "127.1.2.3": False, "::1": False,
    "10.1.2.3": False, "172.16.0.1": False, "192.168.1.1": False, "169.254.169.254": False, "100.64.0.1": False,
    "0.0.0.0": False, "::": False, "224.0.0.1": False, "255.255.255.255": False, "fe80::1": False, "fc00::1": False,
    "::ffff:127.0.0.1": False, "::ffff:8.8.8.8": True, "64:ff9b::a00:1": False, "64:ff9b::808:808": True,
    "ff02::1": False, "fe80::1%eth0": False, "not-an-ip": False,
}  # fmt: skip


@pytest.mark.parametrize(("address", "public"), ADDRESSES.items(), ids=list(ADDRESSES))
def test_public_addresses(address: str, public: bool) -> None:
    assert is_public(address) is public


def test_listed_entries() -> None:
    access = RegistryAccess.of(["Reg.Example:5000", "[fd00::1]:443", "plain"])
    assert access.lists("reg.example", 5000) and not access.lists("reg.example", 5001)
    assert access.lists("fd00::1", 443) and access.lists("plain", 1) and access.lists("plain", 65535)
    assert parse_entry(" a:1 ") == ("a", 1)
    assert access.with_hosts(["bad/host", "ok:2"]).lists("ok", 2)  # a malformed configured host is left out
