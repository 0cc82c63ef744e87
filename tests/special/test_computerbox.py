"""ComputerBox on both engines: typing into an editor changes its pixels, clicks move focus,
the cursor follows mouse_move, noVNC answers over HTTP; a hostile or broken desktop image gets
typed errors within the deadline; caller input is argv, never a shell string."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
import urllib.request
from pathlib import Path

import pytest

import boxlite
from boxlite.api.screenshot import xwd_to_png
from boxlite.computerbox import ComputerBox, DesktopError, DesktopNotReadyError, ScreenshotTooLargeError
from boxlite.errors import ConfigError, ParseError
from support.desktop import (
    active_window_name,
    changed_pixels,
    desktop_rootfs,
    fake_desktop_rootfs,
    read_png,
    rfb_greeting,
    wait_window,
)

DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "images" / "computerbox.png"
SESSION = "/usr/local/bin/boxlite-desktop"
# The first test may build the desktop image (~1-2 min); VM boxes run under TCG.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def timeouts(engine: str) -> float:
    """Seconds a step may take: the VM engine runs under TCG (~10x slower) on a shared machine."""
    return 600.0 if engine == "vm" else 120.0


async def test_types_into_editor_clicks_move_focus_and_novnc_answers(runtime: boxlite.Boxlite, engine: str) -> None:
    limit = timeouts(engine)
    rootfs = await asyncio.to_thread(desktop_rootfs)
    async with ComputerBox(runtime=runtime, memory=1024, rootfs_path=str(rootfs), action_timeout=limit) as desktop:
        await desktop.wait_until_ready(timeout=limit)
        assert await desktop.get_screen_size() == (1024, 768)
        await desktop.launch("xedit", "-title", "left", "-geometry", "460x320+10+10")
        await desktop.launch("xedit", "-title", "right", "-geometry", "460x320+540+10")
        _, left = await wait_window(desktop, "left", limit)
        _, right = await wait_window(desktop, "right", limit)

        # A click moves focus between the two windows.
        text_y = left["Y"] + left["HEIGHT"] - 60  # the editing area fills the lower part of xedit
        await desktop.mouse_move(right["X"] + 200, text_y)
        await desktop.left_click()
        assert await active_window_name(desktop, "right") == "right"
        await desktop.mouse_move(left["X"] + 200, text_y)
        await desktop.left_click()
        assert await active_window_name(desktop, "left") == "left"
        assert await desktop.cursor_position() == (left["X"] + 200, text_y)

        # Typed text shows up in the focused window only; a shell string is typed, not run.
        before = await desktop.screenshot()
        assert (before["width"], before["height"], before["format"]) == (1024, 768, "png")
        hostile = "hi; touch /tmp/pwned $(touch /tmp/pwned2) `touch /tmp/pwned3`"
        await desktop.type(hostile)
        await desktop.key("Return")
        await desktop.type("typed by BoxLite ComputerBox")
        after_png, _, _ = await desktop.screenshot_png()
        _, _, a = read_png(base64.b64decode(before["data"]))
        _, _, b = read_png(after_png)
        x0, y0 = left["X"], left["Y"]
        inside = changed_pixels(a, b, x0, y0, x0 + left["WIDTH"], y0 + left["HEIGHT"])
        outside = changed_pixels(
            a, b, right["X"], right["Y"], right["X"] + right["WIDTH"], right["Y"] + right["HEIGHT"]
        )
        assert inside > 500 and outside == 0, (inside, outside)
        listing = await desktop.exec("ls", "/tmp")
        assert "pwned" not in listing.stdout
        if os.environ.get("BOXLITE_DOCS_SCREENSHOTS") == "1":
            DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
            DOCS_IMAGE.write_bytes(after_png)

        # The rest of the mouse API ends where it says.
        await desktop.left_click_drag(600, 500, 700, 560)
        assert await desktop.cursor_position() == (700, 560)
        await desktop.scroll(300, 200, "down", 2)
        assert await desktop.cursor_position() == (300, 200)
        for click in (desktop.right_click, desktop.middle_click, desktop.double_click, desktop.triple_click):
            await click()

        # noVNC: a page a person can open, on host loopback only.
        url = desktop.novnc_url()
        assert url.startswith("http://127.0.0.1:") and "password=" in url
        deadline = time.monotonic() + limit
        while True:
            try:
                body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=30).read())
                break
            except OSError:
                assert time.monotonic() < deadline, "noVNC never answered"
                await asyncio.sleep(1)
        assert b"noVNC" in body
        greeting, security = await asyncio.to_thread(rfb_greeting, url)
        assert greeting.startswith(b"RFB 003.")  # websockify reaches x11vnc
        assert security[:1] == b"\x01" and security[1:] == b"\x02"  # VNC password only, never "none" (1)


async def test_without_an_image_uses_the_desktop_recipe_of_the_runtime_home(
    runtime: boxlite.Boxlite, engine: str
) -> None:
    """No ``image``/``rootfs_path``: the desktop image under ``<home>/images/desktop`` (here the
    test cache's build, linked in so the test does not download it again)."""
    built = await asyncio.to_thread(desktop_rootfs)
    link = runtime.home.root / "images" / "desktop" / "rootfs" / built.name
    link.parent.mkdir(parents=True)
    link.symlink_to(built)
    limit = timeouts(engine)
    async with ComputerBox(runtime=runtime, memory=1024, action_timeout=limit) as desktop:
        assert built.name in desktop.info().image, desktop.info().image
        await desktop.wait_until_ready(timeout=limit)
        assert await desktop.get_screen_size() == (1024, 768)


async def test_hostile_image_screenshot_is_capped_and_checked(
    runtime: boxlite.Boxlite, engine: str, busybox_rootfs: Path, tmp_path: Path
) -> None:
    """The box decides what xwd prints: an endless stream stops at the cap, garbage is a ParseError."""
    limit = timeouts(engine)
    rootfs = fake_desktop_rootfs(
        busybox_rootfs,
        tmp_path / "hostile",
        {
            SESSION: "echo session up\nexec sleep 100000\n",
            "/usr/bin/xprop": "echo '_NET_SUPPORTING_WM_CHECK(WINDOW): window id # 0x1'\n",
            "/usr/bin/xdotool": 'case "$1" in getdisplaygeometry) echo 1024 768;; *) echo "X=$*";; esac\n',
            "/usr/bin/xwd": (
                "[ -e /tmp/garbage ] && { echo not an xwd dump; exit 0; }\n"
                "while :; do echo 0123456789012345678901234567890123456789012345678901234567890123456789; done\n"
            ),
        },
    )
    async with ComputerBox(
        runtime=runtime, memory=512, rootfs_path=str(rootfs), max_screenshot_bytes=200_000, action_timeout=limit
    ) as desktop:
        await desktop.wait_until_ready(timeout=limit)
        with pytest.raises(ScreenshotTooLargeError):
            await desktop.screenshot()
        await desktop.exec("touch", "/tmp/garbage")
        with pytest.raises(ParseError):
            await desktop.screenshot()
        with pytest.raises(ParseError):
            await desktop.cursor_position()  # "X=getmouselocation --shell" is not a number


async def test_desktop_that_crashes_or_never_starts_raises_with_its_log(
    runtime: boxlite.Boxlite, engine: str, busybox_rootfs: Path, tmp_path: Path
) -> None:
    limit = timeouts(engine)
    crashing = fake_desktop_rootfs(
        busybox_rootfs, tmp_path / "crash", {SESSION: "echo 'Xvfb: fatal: no screens found'\nexit 3\n"}
    )
    async with ComputerBox(runtime=runtime, memory=512, rootfs_path=str(crashing), action_timeout=limit) as desktop:
        with pytest.raises(DesktopError, match="no screens found"):
            await desktop.wait_until_ready(timeout=limit)
    stuck = fake_desktop_rootfs(
        busybox_rootfs, tmp_path / "stuck", {SESSION: "echo starting Xvfb\nexec sleep 100000\n"}
    )
    async with ComputerBox(runtime=runtime, memory=512, rootfs_path=str(stuck), action_timeout=limit) as desktop:
        started = time.monotonic()
        with pytest.raises(DesktopNotReadyError, match="starting Xvfb") as err:
            await desktop.wait_until_ready(timeout=5)
        assert isinstance(err.value, TimeoutError)
        assert time.monotonic() - started < 5 + limit / 4  # the log tail is fetched within its own deadline


def test_bad_input_is_a_typed_error_before_anything_runs() -> None:
    desktop = ComputerBox(rootfs_path="/nonexistent")  # not started: validation comes first
    bad = [
        desktop.mouse_move(-1, 5),
        desktop.mouse_move(True, 5),  # type: ignore[arg-type]
        desktop.mouse_move("1; reboot", 5),  # type: ignore[arg-type]
        desktop.scroll(1, 1, "sideways"),
        desktop.scroll(1, 1, "up", 10_000),
        desktop.type(b"bytes"),  # type: ignore[arg-type]
        desktop.type("x" * 100_000),
        desktop.key(""),
        desktop.key("--help"),
        desktop.left_click_drag(0, 0, 0, 99_999),
    ]
    for coro in bad:
        with pytest.raises(ConfigError):
            asyncio.run(coro)
    with pytest.raises(ConfigError):
        ComputerBox(width=10)
    with pytest.raises(ConfigError):
        ComputerBox(gui_https_port=3001)


def _xwd(
    width: int, height: int, pixels: bytes, byte_order: int = 0, masks: tuple[int, int, int] = (0xFF0000, 0xFF00, 0xFF)
) -> bytes:
    header = [100, 7, 2, 24, width, height, 0, byte_order, 32, byte_order, 32, 32, width * 4, 4, *masks, 8, 256, 0]
    header += [width, height, 0, 0, 0]
    return struct.pack(">25I", *header) + pixels


def test_xwd_to_png_converts_pixels_and_rejects_malformed_dumps() -> None:
    # Two pixels, LSBFirst: pure red then pure blue (B G R X in memory).
    png, width, height = xwd_to_png(_xwd(2, 1, b"\x00\x00\xff\x00\xff\x00\x00\x00"))
    assert (width, height) == (2, 1)
    assert read_png(png)[2] == [b"\xff\x00\x00\x00\x00\xff"]
    png, _, _ = xwd_to_png(_xwd(1, 1, b"\x00\x10\x20\x30", byte_order=1))  # MSBFirst: X R G B
    assert read_png(png)[2] == [b"\x10\x20\x30"]
    for dump in (
        b"short",
        _xwd(4, 4, b"\x00" * 8),  # fewer pixels than the header promises
        _xwd(0, 1, b""),
        _xwd(100_000, 1, b""),
        _xwd(1, 1, b"\x00" * 4, masks=(0xF800, 0x7E0, 0x1F)),
    ):
        with pytest.raises(ParseError):
            xwd_to_png(dump)
