"""BoxLite's ``prepareTunnel`` over ``boxlite serve``: the URI reaches HTTP services in the box
directly, ``CONNECT`` on it gives a raw byte stream; without the URI's token (or with a head too big
or too slow) nothing reaches the box; the listener goes away with its box. One box per engine."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from rest.serverproc import API_KEY, Server, serving_tcp
from support.boxnc import nc

ENGINES = [e for e in os.environ.get("BOXLITE_TEST_ENGINES", "namespace").split(",") if e]
ECHO, WEB, ONCE = 7000, 7001, 7002
SERVICES = (
    f"(nc -ll -p {ECHO} -e cat &) ; ({nc(f'-l -p {ONCE} >/tmp/once')} &) ; "
    f"mkdir -p /www && echo page > /www/index.html && httpd -p 127.0.0.1:{WEB} -h /www"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving_tcp(tmp_path_factory.mktemp("wiretun") / "home") as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=120) as client:
        yield client


def run(http: httpx.Client, box_id: str, script: str) -> None:
    """Run ``script`` in the box through BoxLite's exec route, until it ended."""
    resp = http.post(f"/v1/default/boxes/{box_id}/exec", json={"command": "sh", "args": ["-c", script]})
    assert resp.status_code == 201, resp.text
    url = f"/v1/default/boxes/{box_id}/executions/{resp.json()['execution_id']}"
    deadline = time.monotonic() + 120
    while (info := http.get(url).json())["status"] == "running":
        assert time.monotonic() < deadline, info
        time.sleep(0.1)
    assert info.get("exit_code") == 0, info


def wait_until(http: httpx.Client, box_id: str, check: str) -> None:
    """Until the shell test ``check`` succeeds in the box (60 s at most)."""
    run(http, box_id, f"for i in $(seq 300); do {check} && exit 0; sleep 0.2; done; exit 1")


@pytest.fixture(scope="module", params=ENGINES)
def box_id(request: pytest.FixtureRequest, http: httpx.Client, busybox_rootfs: Path) -> Iterator[str]:
    """A running box (of each engine under test) with an echo service, a web server and a
    one-connection service that writes what it received to /tmp/once."""
    options = {"rootfs_path": str(busybox_rootfs), "engine": request.param, "memory_mib": 256}
    resp = http.post("/v1/boxes", json={"options": options})
    assert resp.status_code == 201, resp.text
    bid = resp.json()["id"]
    assert http.post(f"/v1/boxes/{bid}/start").status_code == 200
    run(http, bid, SERVICES)
    yield bid
    http.delete(f"/v1/default/boxes/{bid}", params={"force": "true"})


def prepare(http: httpx.Client, box_id: str, port: int) -> str:
    resp = http.post(f"/v1/default/boxes/{box_id}/network/tunnel", params={"port": port})
    assert resp.status_code == 200, resp.text
    assert set(resp.json()) == {"uri"} and isinstance(resp.json()["uri"], str)
    return str(resp.json()["uri"])


def dial(uri: str) -> socket.socket:
    parts = urlsplit(uri)
    assert parts.hostname and parts.port
    return socket.create_connection((parts.hostname, parts.port), timeout=120)


def basic(user_pass: str) -> str:
    return "Basic " + base64.b64encode(user_pass.encode()).decode()


def answer(sock: socket.socket) -> tuple[str, bytes]:
    """The status line of a reply, and what followed its head."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head.decode("latin-1"), rest


def read_to_end(sock: socket.socket) -> bytes:
    parts = []
    while chunk := sock.recv(1 << 16):
        parts.append(chunk)
    return b"".join(parts)


def connect(uri: str, how: str = "userinfo") -> socket.socket:
    """A ``CONNECT`` on the URI, as BoxLite's client sends it (the URI's authority, userinfo
    included) or as a proxy client does (``Proxy-Authorization``); answered 200 or fails."""
    parts = urlsplit(uri)
    plain = f"{parts.hostname}:{parts.port}"
    for _ in range(100):  # the service may still be starting: 502 until it listens
        sock = dial(uri)
        if how == "userinfo":
            sock.sendall(f"CONNECT {parts.netloc} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
        else:
            auth = basic(f"{parts.username}:{parts.password}")
            sock.sendall(f"CONNECT {plain} HTTP/1.1\r\nHost: {plain}\r\nProxy-Authorization: {auth}\r\n\r\n".encode())
        status, rest = answer(sock)
        if status.startswith("HTTP/1.1 200 "):
            assert rest == b""
            return sock
        sock.close()
        assert status.startswith("HTTP/1.1 502 "), status
        time.sleep(0.2)
    raise AssertionError("the service never accepted")


def test_http_reaches_the_service_at_the_uri(http: httpx.Client, box_id: str) -> None:
    uri = prepare(http, box_id, WEB)
    assert prepare(http, box_id, WEB) == uri  # repeat calls: the same descriptor
    assert urlsplit(uri).hostname == "127.0.0.1" and urlsplit(uri).password
    connect(uri).close()  # until httpd listens
    page = httpx.get(f"{uri}/index.html", timeout=60)  # httpx sends the userinfo as Basic credentials
    assert page.status_code == 200 and page.text == "page\n", page.text
    other = prepare(http, box_id, ECHO)
    assert urlsplit(other).port != urlsplit(uri).port and urlsplit(other).password != urlsplit(uri).password

    # What the service receives: the request as sent, our credentials and the Host's userinfo removed.
    parts = urlsplit(other)
    connect(other).close()
    sock = dial(other)
    sock.sendall(
        f"GET /x?y=1 HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: {basic(f'boxlite:{parts.password}')}\r\n"
        f"X-Kept: yes\r\n\r\nbody".encode()
    )
    sock.shutdown(socket.SHUT_WR)
    echoed = read_to_end(sock)
    sock.close()
    assert echoed == f"GET /x?y=1 HTTP/1.1\r\nHost: 127.0.0.1:{parts.port}\r\nX-Kept: yes\r\n\r\nbody".encode()


def test_connect_is_a_raw_byte_stream(http: httpx.Client, box_id: str) -> None:
    uri = prepare(http, box_id, ECHO)
    sock = connect(uri)
    for message in (b"ping\n", b"\x00\xff raw bytes, not HTTP\r\n\r\n"):
        sock.sendall(message)
        got = b""
        while len(got) < len(message):
            got += sock.recv(4096)
        assert got == message
    sock.close()

    payload = os.urandom(3 << 20)
    sock = connect(uri, how="proxy-authorization")

    def send() -> None:
        for i in range(0, len(payload), 100_000):
            sock.sendall(payload[i : i + 100_000])
        sock.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send)
    sender.start()
    echoed = read_to_end(sock)
    sender.join()
    sock.close()
    assert hashlib.sha256(echoed).hexdigest() == hashlib.sha256(payload).hexdigest(), len(echoed)


def refused(uri: str, request: bytes) -> str:
    """The status line the listener answers ``request`` with (it then closes)."""
    sock = dial(uri)
    sock.sendall(request)
    status, _ = answer(sock)
    read_to_end(sock)
    sock.close()
    return status.split("\r\n")[0]


def test_refused_clients_never_reach_the_box(http: httpx.Client, box_id: str) -> None:
    """Missing or wrong tokens, oversize, garbage and slow heads, too many connections: each
    refused by the listener; the one-connection service then gets the one client with the token."""
    listen = f"cat /proc/net/tcp /proc/net/tcp6 | grep -qE ':{ONCE:04X} [0-9A-F]+:0000 0A'"
    wait_until(http, box_id, listen)  # seen listening, not by connecting (it takes one connection)
    uri = prepare(http, box_id, ONCE)
    parts = urlsplit(uri)
    plain = f"{parts.hostname}:{parts.port}"
    stranger = urlsplit(prepare(http, box_id, ECHO)).password  # another tunnel's token

    slow_result: dict[str, Any] = {}

    def slow() -> None:
        sock = dial(uri)
        started = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\n")
        slow_result["status"] = answer(sock)[0].split("\r\n")[0]
        slow_result["after"] = time.monotonic() - started
        slow_result["rest"] = read_to_end(sock)
        sock.close()

    # Connections beyond the tunnel's 64 are answered 503 at once.
    idle = [dial(uri) for _ in range(64)]
    time.sleep(0.5)
    assert refused(uri, b"") == "HTTP/1.1 503 Service Unavailable"
    for s in idle:
        s.close()
    time.sleep(0.5)

    slow_thread = threading.Thread(target=slow)
    slow_thread.start()
    cases = [
        (f"CONNECT {plain} HTTP/1.1\r\nHost: {plain}\r\n\r\n", "407 Proxy Authentication Required"),
        (f"CONNECT boxlite:wrong@{plain} HTTP/1.1\r\nHost: {plain}\r\n\r\n", "407 Proxy Authentication Required"),
        (f"CONNECT {plain} HTTP/1.1\r\nProxy-Authorization: {basic(f'boxlite:{stranger}')}\r\n\r\n",
         "407 Proxy Authentication Required"),
        (f"CONNECT {plain} HTTP/1.1\r\nProxy-Authorization: {basic(f'other:{parts.password}')}\r\n\r\n",
         "407 Proxy Authentication Required"),
        (f"GET / HTTP/1.1\r\nHost: {plain}\r\n\r\n", "401 Unauthorized"),
        (f"GET / HTTP/1.1\r\nAuthorization: {basic('boxlite:' + 'x' * 32)}\r\n\r\n", "401 Unauthorized"),
        (f"GET / HTTP/1.1\r\nX: {'a' * 9000}", "431 Request Header Fields Too Large"),  # no end in sight
        (f"GET / HTTP/1.1\r\nX: {'a' * 9000}\r\n\r\n", "431 Request Header Fields Too Large"),
        ("\x16\x03\x01 not http at all\r\n\r\n", "400 Bad Request"),
        (f"GET / HTTP/1.1\r\nno colon here\r\nAuthorization: {basic(f'boxlite:{parts.password}')}\r\n\r\n",
         "400 Bad Request"),
    ]  # fmt: skip
    for request, status in cases:
        assert refused(uri, request.encode("latin-1")) == f"HTTP/1.1 {status}", request[:80]
    slow_thread.join(30)
    assert slow_result["status"] == "HTTP/1.1 408 Request Timeout" and 9 < slow_result["after"] < 20, slow_result

    # The rightful client is the service's first and only one.
    sock = connect(uri)
    sock.sendall(b"only the rightful client")
    sock.shutdown(socket.SHUT_WR)
    assert read_to_end(sock) == b""
    sock.close()
    wait_until(http, box_id, "grep -qx 'only the rightful client' /tmp/once")


def test_listener_goes_away_with_its_box(http: httpx.Client, box_id: str) -> None:
    uri = prepare(http, box_id, ECHO)
    connect(uri).close()
    assert http.delete(f"/v1/default/boxes/{box_id}", params={"force": "true"}).status_code == 204
    deadline = time.monotonic() + 15
    while True:
        try:
            dial(uri).close()
        except ConnectionRefusedError:
            break
        assert time.monotonic() < deadline, "the tunnel still listens after its box was removed"
        time.sleep(0.2)
    resp = http.post(f"/v1/default/boxes/{box_id}/network/tunnel", params={"port": ECHO})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"


def test_route_errors_are_documented(http: httpx.Client, busybox_rootfs: Path) -> None:
    doc = http.get("/openapi.json").json()
    op = doc["paths"]["/v1/{prefix}/boxes/{box_id}/network/tunnel"]["post"]
    assert op["operationId"] == "prepareTunnel"
    documented = {int(c) for c in op["responses"] if c.isdigit()}
    configured = http.post("/v1/boxes", json={"options": {"rootfs_path": str(busybox_rootfs)}}).json()["id"]
    url = f"/v1/default/boxes/{configured}/network/tunnel"
    cases = [
        (http.post("/v1/default/boxes/no-such-box/network/tunnel", params={"port": 80}), 404, "not_found"),
        (http.post(url, params={"port": 80}), 409, "invalid_state"),  # not running
        (http.post(url, params={"port": 0}), 400, "invalid_argument"),
        (http.post(url, params={"port": 65536}), 400, "invalid_argument"),
        (http.post(url, params={"port": "http"}), 400, "invalid_argument"),
        (http.post(url), 400, "invalid_argument"),
    ]
    for resp, status, code in cases:
        assert resp.status_code == status and resp.json()["error"]["code"] == code, resp.text
        assert status in documented
    anonymous = httpx.post(f"{http.base_url}{url}", params={"port": 80})
    assert anonymous.status_code == 401 and 401 in documented
    http.delete(f"/v1/boxes/{configured}")
