"""The MCP desktop tools against a hostile desktop image: what ``xwd`` sends is capped (raw bytes
from the box, PNG bytes to the client), a stalled action or creation ends at its deadline, a
failed creation leaves no box, and the server's desktops and launched programs are bounded.

The image is the runtime home's desktop recipe directory, here a busybox rootfs whose desktop
programs are shell scripts (the MCP tools take no image or host path)."""

from __future__ import annotations

import base64
import os
import struct
import time
from pathlib import Path

import pytest
from mcp import Client
from mcpflow import error_text, result

import boxlite
from boxlite.images.recipes.desktop import recipe_key
from boxlite.mcp import limits
from boxlite.mcp.tools import build_server
from support.desktop import fake_desktop_rootfs, read_png

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # VM boxes run under TCG
SESSION = "/usr/local/bin/boxlite-desktop"
XDOTOOL = """case "$1" in
getdisplaygeometry) echo 64 64;;
getmouselocation) echo X=3; echo Y=4;;
esac
"""
XWD = """case "$(cat /tmp/mode 2>/dev/null)" in
flood) while :; do echo 0123456789012345678901234567890123456789012345678901234567890123456789; done;;
stall) exec sleep 100000;;
*) cat /screen.xwd;;
esac
"""


def limit(engine: str) -> float:
    return 600.0 if engine == "vm" else 20.0


def noise_xwd(width: int, height: int) -> bytes:
    """A valid 32-bit TrueColor XWD dump of random pixels (its PNG barely compresses)."""
    header = [100, 7, 2, 24, width, height, 0, 0, 32, 0, 32, 32, width * 4, 4, 0xFF0000, 0xFF00, 0xFF, 8, 256, 0]
    header += [width, height, 0, 0, 0]
    return struct.pack(">25I", *header) + os.urandom(width * height * 4)


def install_desktop(rt: boxlite.Boxlite, busybox: Path, session: str) -> Path:
    """The fake desktop image where ``create_computer_box`` looks for the desktop recipe."""
    dest = rt.home.root / "images" / "desktop" / "rootfs" / recipe_key()
    dest.parent.mkdir(parents=True, exist_ok=True)
    scripts = {SESSION: session, "/usr/bin/xprop": "echo ok\n", "/usr/bin/xdotool": XDOTOOL, "/usr/bin/xwd": XWD}
    fake_desktop_rootfs(busybox, dest, scripts)
    (dest / "screen.xwd").write_bytes(noise_xwd(64, 64))
    return dest


async def test_screenshots_are_capped_and_actions_have_deadlines(
    runtime: boxlite.Boxlite, engine: str, busybox_rootfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_desktop(runtime, busybox_rootfs, "echo session up\nexec sleep 100000\n")
    act = limit(engine) / 10 if engine != "vm" else 120.0
    monkeypatch.setattr(limits, "MAX_DESKTOPS", 1)
    monkeypatch.setattr(limits, "MAX_LAUNCHED", 1)
    async with Client(build_server(lambda: runtime), read_timeout_seconds=3 * limit(engine)) as client:
        args = {"name": "fake", "width": 64, "height": 64, "action_timeout": act, "timeout": limit(engine)}
        result(await client.call_tool("create_computer_box", args))

        # A valid dump becomes a PNG of its size.
        shot = await client.call_tool("screenshot", {"box": "fake"})
        assert not shot.is_error, shot.content
        assert read_png(base64.b64decode(shot.content[0].data))[:2] == (64, 64)  # type: ignore[union-attr]

        # The PNG sent to the client is capped too (noise does not compress).
        monkeypatch.setattr(limits, "MAX_SCREENSHOT_PNG", 4096)
        assert "ResourceExhaustedError: " in error_text(await client.call_tool("screenshot", {"box": "fake"}))
        monkeypatch.setattr(limits, "MAX_SCREENSHOT_PNG", 8 << 20)

        # An endless dump stops at the raw cap of a 64x64 screen; a stalled one at the deadline.
        result(await client.call_tool("write_file", {"box": "fake", "path": "/tmp/mode", "content": "flood"}))
        started = time.monotonic()
        flood = error_text(await client.call_tool("screenshot", {"box": "fake"}))
        assert "ScreenshotTooLargeError: " in flood and str(64 * 64 * 4 + limits.XWD_SLACK) in flood
        assert time.monotonic() - started < act + limits.KILL_GRACE
        result(await client.call_tool("write_file", {"box": "fake", "path": "/tmp/mode", "content": "stall"}))
        started = time.monotonic()
        stalled = error_text(await client.call_tool("screenshot", {"box": "fake"}))
        assert "DesktopError: " in stalled and "did not finish" in stalled
        assert act <= time.monotonic() - started < act + limits.KILL_GRACE

        # The desktop still answers; its launched programs and the server's desktops are bounded.
        assert result(await client.call_tool("cursor_position", {"box": "fake"})) == {"x": 3, "y": 4}
        result(await client.call_tool("launch", {"box": "fake", "command": ["sleep", "1000"]}))
        again = await client.call_tool("launch", {"box": "fake", "command": ["sleep", "1000"]})
        assert "ResourceExhaustedError: " in error_text(again)
        second = await client.call_tool("create_computer_box", {"width": 64, "height": 64})
        assert "ResourceExhaustedError: " in error_text(second)
        assert [b["name"] for b in result(await client.call_tool("list_boxes", {}))] == ["fake"]

        # Stopping the box ends the desktop: later actions are refused, a new desktop fits again.
        result(await client.call_tool("stop_box", {"box": "fake", "timeout": 5}))
        assert "is not a desktop box" in error_text(await client.call_tool("screenshot", {"box": "fake"}))
        result(await client.call_tool("remove_box", {"box": "fake"}))
        assert result(await client.call_tool("list_boxes", {})) == []


async def test_a_desktop_that_fails_or_stalls_at_creation_leaves_no_box(
    runtime: boxlite.Boxlite, engine: str, busybox_rootfs: Path
) -> None:
    install_desktop(runtime, busybox_rootfs, "echo starting; sleep 3; echo 'Xvfb: fatal: boom'; exit 3\n")
    async with Client(build_server(lambda: runtime), read_timeout_seconds=3 * limit(engine)) as client:
        started = time.monotonic()
        stalled = await client.call_tool("create_computer_box", {"name": "slow", "timeout": 1})
        assert "TimeoutError: " in error_text(stalled)
        assert time.monotonic() - started < 1 + 2 * limits.KILL_GRACE + 5
        assert result(await client.call_tool("list_boxes", {})) == []
        crashed = await client.call_tool("create_computer_box", {"name": "crash", "timeout": limit(engine)})
        text = error_text(crashed)
        assert "DesktopError: " in text and "boom" in text
        assert result(await client.call_tool("list_boxes", {})) == []
