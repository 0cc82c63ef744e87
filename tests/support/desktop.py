"""Helpers of the ComputerBox tests: the cached desktop image, a PNG reader, window lookups."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import socket
import struct
import time
import urllib.parse
import zlib
from pathlib import Path

from boxlite.computerbox import ComputerBox
from boxlite.images.recipes.desktop import ensure
from support.images import CACHE


def desktop_rootfs() -> Path:
    """The desktop image, built once per machine under the test cache (not per test home)."""
    return ensure(CACHE / "images" / "desktop")


def fake_desktop_rootfs(busybox: Path, dest: Path, scripts: dict[str, str]) -> Path:
    """A busybox rootfs whose desktop programs are the given shell scripts (a hostile image)."""
    shutil.copytree(busybox, dest, symlinks=True)
    for path, body in scripts.items():
        target = dest / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("#!/bin/sh\n" + body)
        target.chmod(0o755)
    return dest


def read_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, RGB rows) of an 8-bit RGB, non-interlaced PNG (all five row filters)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0] == zlib.crc32(kind + body)
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, colour, interlace) == (8, 2, 0)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride, rows = zlib.decompress(idat), width * 3, list[bytes]()
    prev = bytearray(stride)
    for y in range(height):
        filt, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride if filt else 0):
            left, up = line[i - 3] if i >= 3 else 0, prev[i]
            upleft = prev[i - 3] if i >= 3 else 0
            if filt == 1:
                line[i] = (line[i] + left) & 0xFF
            elif filt == 2:
                line[i] = (line[i] + up) & 0xFF
            elif filt == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif filt == 4:
                p = left + up - upleft
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - upleft)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else upleft)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, rows


def changed_pixels(a: list[bytes], b: list[bytes], x0: int, y0: int, x1: int, y1: int) -> int:
    """Pixels that differ between two screenshots inside [x0, x1) x [y0, y1)."""
    return sum(
        1
        for y in range(max(0, y0), min(len(a), y1))
        for x in range(max(0, x0), min(len(a[y]) // 3, x1))
        if a[y][3 * x : 3 * x + 3] != b[y][3 * x : 3 * x + 3]
    )


async def wait_window(desktop: ComputerBox, name: str, timeout: float) -> tuple[str, dict[str, int]]:
    """(window id, geometry X/Y/WIDTH/HEIGHT) of the visible window titled ``name``."""
    deadline = time.monotonic() + timeout
    while True:
        found = await desktop.exec("xdotool", "search", "--onlyvisible", "--name", f"^{name}$", timeout=60)
        ids = found.stdout.split()
        if ids:
            geo = await desktop.exec("xdotool", "getwindowgeometry", "--shell", ids[0], timeout=60)
            values = dict(line.split("=", 1) for line in geo.stdout.splitlines() if "=" in line)
            return ids[0], {k: int(values[k]) for k in ("X", "Y", "WIDTH", "HEIGHT")}
        assert time.monotonic() < deadline, f"no window {name!r} after {timeout} s"
        await asyncio.sleep(1)


async def active_window_name(desktop: ComputerBox, expect: str, timeout: float = 30.0) -> str:
    """The focused window's name once it is ``expect``, or the last one seen after ``timeout`` s:
    the window manager applies a click's focus change on its own time (seconds under TCG)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await desktop.exec("xdotool", "getactivewindow", "getwindowname", timeout=60)
        name = result.stdout.strip()
        if name == expect or time.monotonic() > deadline:
            return name
        await asyncio.sleep(0.5)


def rfb_greeting(url: str, timeout: float = 30.0) -> tuple[bytes, bytes]:
    """Open noVNC's websocket (what the page does) and return the VNC server's greeting
    (``RFB 003.008``) and the security types it offers (RFB 3.8: count, then one byte each)."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /websockify HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary\r\n\r\n"
    )
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(request.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            assert chunk, f"websocket handshake cut short: {data!r}"
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

        def frame() -> bytes:
            nonlocal rest
            while len(rest) < 2 or len(rest) < 2 + (rest[1] & 0x7F):
                chunk = s.recv(4096)
                assert chunk, "no frame from the VNC server"
                rest += chunk
            size = rest[1] & 0x7F
            payload, rest = rest[2 : 2 + size], rest[2 + size :]
            return payload

        greeting = frame()
        # Answer with the same version (a masked client frame) and read the security types offered.
        mask, reply = os.urandom(4), greeting[:12]
        s.sendall(bytes([0x82, 0x80 | len(reply)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(reply)))
        types = frame()
        return greeting, types
