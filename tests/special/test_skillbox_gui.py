"""SkillBox's desktop (issue 13): noVNC answers on host loopback over HTTP (a free port) and HTTPS
(the port asked for, the box's own self-signed certificate), x11vnc behind it offers VNC password
authentication only, rejects a wrong password and, with the box's one, serves the live 1024x768
display; a program started in the box (no DISPLAY given) draws on that display; Claude Code's
environment names the display. No Claude Code call is made (test_skillbox.py covers ``call``)."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import ssl
import struct
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

import boxlite
from boxlite.api.screenshot import xwd_to_png
from boxlite.computerbox import DesktopError
from boxlite.errors import ConfigError
from boxlite.skillbox import SkillBox
from support.desktop import read_png


def timeouts(engine: str) -> float:
    return 900.0 if engine == "vm" else 120.0


@pytest.fixture(scope="module")
def skill_rootfs() -> Path:
    from boxlite.images.recipes import ensure_recipe
    from support.images import CACHE

    return ensure_recipe("skill", CACHE / "recipes")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WebSocket:
    """The part of a websocket client noVNC's page is: binary frames to websockify."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /websockify HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary\r\n\r\n".encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(4096)
            assert chunk, f"websocket handshake cut short: {data!r}"
            data += chunk
        head, _, self.raw = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        self.payload = b""

    def send(self, data: bytes) -> None:
        mask = os.urandom(4)
        size = bytes([0x80 | len(data)]) if len(data) < 126 else bytes([0x80 | 126]) + struct.pack(">H", len(data))
        self.sock.sendall(b"\x82" + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _more(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("the VNC connection closed")
        return chunk

    def read(self, n: int) -> bytes:
        while len(self.payload) < n:
            while len(self.raw) < 2:
                self.raw += self._more()
            size, at = self.raw[1] & 0x7F, 2
            if size >= 126:
                width = 2 if size == 126 else 8
                while len(self.raw) < 2 + width:
                    self.raw += self._more()
                size, at = int.from_bytes(self.raw[2 : 2 + width], "big"), 2 + width
            while len(self.raw) < at + size:
                self.raw += self._more()
            if self.raw[0] & 0x0F == 0x8:
                raise EOFError(f"websocket closed: {self.raw[at : at + size]!r}")
            self.payload += self.raw[at : at + size]
            self.raw = self.raw[at + size :]
        out, self.payload = self.payload[:n], self.payload[n:]
        return out


def vnc_login(url: str, password: str, timeout: float = 60.0) -> tuple[int, int] | str:
    """RFB 3.8 through noVNC's websocket: (width, height) of the display, or the refusal reason."""
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    try:
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    except ImportError:  # cryptography < 43
        from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES  # type: ignore[attr-defined,no-redef]

    parts = urllib.parse.urlsplit(url)
    ws = WebSocket(parts.hostname or "127.0.0.1", parts.port or 80, timeout)
    try:
        assert ws.read(12).startswith(b"RFB 003.")
        ws.send(b"RFB 003.008\n")
        count = ws.read(1)[0]
        offered = ws.read(count)
        assert offered == b"\x02", offered  # VNC authentication only, never "none" (1)
        ws.send(b"\x02")
        challenge = ws.read(16)
        # VNC's DES key: the password's first 8 bytes, each with its bits reversed.
        key = bytes(int(f"{b:08b}"[::-1], 2) for b in password.encode()[:8].ljust(8, b"\0"))
        encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
        ws.send(encryptor.update(challenge) + encryptor.finalize())
        if struct.unpack(">I", ws.read(4))[0] != 0:
            (size,) = struct.unpack(">I", ws.read(4))
            return ws.read(size).decode("utf-8", "replace")
        ws.send(b"\x01")  # ClientInit: shared
        width, height = struct.unpack(">HH", ws.read(4))
        return width, height
    finally:
        ws.sock.close()


async def poll(what: str, deadline: float, fn: object) -> bytes:
    while True:
        try:
            return await asyncio.to_thread(fn)  # type: ignore[arg-type]
        except OSError as e:
            assert time.monotonic() < deadline, f"{what} never answered: {e}"
            await asyncio.sleep(1)


async def screenshot(box: SkillBox, limit: float) -> list[bytes]:
    raw = await box._run("xwd", "-root", "-silent", timeout=limit, limit=16 << 20)  # ComputerBox's capped action
    _, _, rows = read_png(xwd_to_png(raw)[0])
    return rows


@pytest.mark.timeout(2400)
@pytest.mark.namespace_only  # CI time: ~1 min here, 3.5 min on the VM under TCG (passed there by hand)
async def test_skillbox_desktop_novnc_http_https_and_vnc_password(
    runtime: boxlite.Boxlite, engine: str, skill_rootfs: Path
) -> None:
    limit = timeouts(engine)
    https_port = free_port()
    async with SkillBox(
        rootfs_path=str(skill_rootfs), runtime=runtime, api_key="sk-unused", memory_mib=1024, name=None,
        gui_http_port=0, gui_https_port=https_port,
    ) as box:  # fmt: skip
        started = time.monotonic()
        await box.wait_until_ready(timeout=limit)
        print(f"desktop + claude ready after {time.monotonic() - started:.1f} s")
        deadline = time.monotonic() + limit

        # HTTP on a free loopback port, exposed as gui_http_port and in novnc_url().
        url = box.novnc_url()
        assert box.gui_http_port and url.startswith(f"http://127.0.0.1:{box.gui_http_port}/vnc.html"), url
        page = await poll("noVNC (http)", deadline, lambda: urllib.request.urlopen(url, timeout=30).read())
        assert b"noVNC" in page

        # HTTPS on the port asked for, verified against the box's own certificate (and 127.0.0.1).
        assert box.gui_https_port == https_port
        tls_url = box.novnc_url(https=True)
        assert tls_url.startswith(f"https://127.0.0.1:{https_port}/vnc.html"), tls_url
        cert = box.gui_tls_certificate
        assert cert is not None and b"BEGIN CERTIFICATE" in cert
        context = ssl.create_default_context(cadata=cert.decode())
        page = await poll(
            "noVNC (https)", deadline, lambda: urllib.request.urlopen(tls_url, timeout=30, context=context).read()
        )
        assert b"noVNC" in page
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            await asyncio.to_thread(lambda: urllib.request.urlopen(tls_url, timeout=30).read())  # not a public CA

        # VNC: a wrong password is refused; the box's password reaches the live display.
        password = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["password"][0]
        refused = await asyncio.to_thread(vnc_login, url, "wrong!!!")
        assert isinstance(refused, str), refused
        assert await asyncio.to_thread(vnc_login, url, password) == (1024, 768)

        # A program the box starts without being told the display draws on it (as Claude Code's tools).
        before = await screenshot(box, limit)
        await box.box.exec("xterm", ["-bg", "red", "-geometry", "40x10+0+0"], stdin=False)
        red = b"\xff\x00\x00"
        found = 0
        while found < 1000:
            assert time.monotonic() < deadline, "no red xterm on the desktop"
            await asyncio.sleep(1)
            after = await screenshot(box, limit)
            found = sum(row[i : i + 3] == red for row in after[:200] for i in range(0, 600, 3))
        assert sum(row[i : i + 3] == red for row in before[:200] for i in range(0, 600, 3)) < found
        assert box._claude_env()["DISPLAY"] == ":1"


def test_skillbox_gui_options_are_checked() -> None:
    with pytest.raises(ConfigError):
        SkillBox(api_key="k", gui_http_port=7000, gui_https_port=7000)
    with pytest.raises(ConfigError):
        SkillBox(api_key="k", gui_http_port=70_000)
    with pytest.raises(ConfigError):
        SkillBox(api_key="k", gui_https_port=True)  # type: ignore[arg-type]
    box = SkillBox(api_key="k", gui_http_port=7001)
    assert (box.gui_http_port, box.gui_https_port) == (7001, None)  # None: a free one, chosen at start
    with pytest.raises(boxlite.errors.BoxliteError, match="not published"):
        box.novnc_url()


@pytest.mark.namespace_only  # one more box start; the behaviour is engine-independent host code
async def test_skillbox_image_without_a_desktop_still_starts(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    """``image=`` of one's own without boxlite-desktop: the box starts; the desktop says why it is absent."""
    async with SkillBox(rootfs_path=str(busybox_rootfs), runtime=runtime, api_key="k", name=None) as box:
        assert (await box.exec("echo", "up")).stdout.strip() == "up"
        with pytest.raises(DesktopError, match="no desktop"):
            box.novnc_url()
