"""What a person watching a SkillBox's desktop relies on, gathered as plain facts (issue 13).

The facts are collected inside the SkillBox scenario of tests/special/test_skillbox.py (one box,
one boot for every SkillBox check on each engine) and asserted by the tests there: noVNC over
HTTP on a free host loopback port and over HTTPS on the port asked for (the box's own
self-signed certificate), x11vnc offering VNC password authentication only, and a program the
box starts without being told the display drawing on it.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import ssl
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

RED = b"\xff\x00\x00"


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


def vnc_login(url: str, password: str, timeout: float = 60.0) -> list[int] | str:
    """RFB 3.8 through noVNC's websocket: [width, height] of the display, or the refusal reason.
    Raises AssertionError when the server offers anything but VNC authentication (type 2)."""
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
        return [width, height]
    finally:
        ws.sock.close()


async def poll(what: str, deadline: float, fn: Callable[[], bytes]) -> bytes:
    while True:
        try:
            return await asyncio.to_thread(fn)
        except OSError as e:
            assert time.monotonic() < deadline, f"{what} never answered: {e}"
            await asyncio.sleep(1)


async def red_pixels(box: Any, limit: float) -> int:
    """Pure red pixels in the display's top-left 200x200 (where the test's xterm goes)."""
    from boxlite.api.screenshot import xwd_to_png
    from support.desktop import read_png

    raw = await box._run("xwd", "-root", "-silent", timeout=limit, limit=16 << 20)  # ComputerBox's capped action
    _, _, rows = read_png(xwd_to_png(raw)[0])
    return sum(row[i : i + 3] == RED for row in rows[:200] for i in range(0, 600, 3))


async def desktop_facts(box: Any, https_port: int, limit: float) -> dict[str, Any]:
    """Everything test_skillbox_desktop_* asserts, from a started SkillBox (``box``) whose
    desktop answers; ``https_port``: the gui_https_port it was asked for."""
    facts: dict[str, Any] = {"https_port_asked": https_port}
    deadline = time.monotonic() + limit
    url = box.novnc_url()
    facts.update(http_url=url, gui_http_port=box.gui_http_port, gui_https_port=box.gui_https_port)
    page = await poll("noVNC (http)", deadline, lambda: urllib.request.urlopen(url, timeout=30).read())
    facts["http_page_is_novnc"] = b"noVNC" in page

    tls_url = box.novnc_url(https=True)
    cert = box.gui_tls_certificate
    facts.update(https_url=tls_url, certificate=(cert or b"").decode("ascii", "replace"))
    if cert:
        context = ssl.create_default_context(cadata=cert.decode())
        page = await poll(
            "noVNC (https)", deadline, lambda: urllib.request.urlopen(tls_url, timeout=30, context=context).read()
        )
        facts["https_page_is_novnc"] = b"noVNC" in page
    try:  # the system's CAs: the box's certificate is no public CA's
        await asyncio.to_thread(lambda: urllib.request.urlopen(tls_url, timeout=30).read())
        facts["https_without_pinning"] = "accepted"
    except urllib.error.URLError as e:
        facts["https_without_pinning"] = str(e)

    password = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["password"][0]
    facts["vnc_wrong_password"] = await asyncio.to_thread(vnc_login, url, "wrong!!!")
    facts["vnc_password"] = await asyncio.to_thread(vnc_login, url, password)

    # A program the box starts without being told the display draws on it (as Claude Code's tools).
    facts["red_before"] = await red_pixels(box, limit)
    await box.box.exec("xterm", ["-bg", "red", "-geometry", "40x10+0+0"], stdin=False)
    facts["red_after"] = 0
    while facts["red_after"] < 1000 and time.monotonic() < deadline:
        await asyncio.sleep(1)
        facts["red_after"] = await red_pixels(box, limit)
    facts["claude_display"] = box._claude_env()["DISPLAY"]
    return facts
