"""``ComputerBox``: a desktop in a box, driven from outside (the "computer use" tool of AI agents).

The box runs Xvfb + openbox + x11vnc + websockify/noVNC (image built offline from Debian
packages, see ``images/recipes/desktop.py``). Every action is one ``exec`` of a fixed program with
the caller's values as separate argv entries (never a shell string), with a deadline and a cap
on what the box may send back: the box and its programs are assumed hostile.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from ..errors import ConfigError, ParseError, ResourceExhaustedError
from ..images.recipes import recipe_image
from .desktopsession import (
    ACTION_TIMEOUT,
    DISPLAY,
    DISPLAY_HEIGHT,
    DISPLAY_WIDTH,
    DesktopBox,
    DesktopError,
    DesktopNotReadyError,
    _coordinate,
    _positive,
)
from .execution import Execution
from .runtime import Boxlite
from .screenshot import xwd_to_png

__all__ = [
    "ComputerBox",
    "DesktopError",
    "DesktopNotReadyError",
    "ScreenshotTooLargeError",
]

COMPUTERBOX_CPUS = 2
COMPUTERBOX_MEMORY_MIB = 2048
MAX_SCREENSHOT_BYTES = 64 * 1024 * 1024
"""Raw (XWD) screenshot bytes read from the box at most (3 MiB at 1024x768)."""
MAX_TYPE_CHARS = 64 * 1024
SCROLL_BUTTONS = {"up": "4", "down": "5", "left": "6", "right": "7"}


class ScreenshotTooLargeError(DesktopError, ResourceExhaustedError):
    """The box sent more screenshot bytes than ``max_screenshot_bytes``."""


class ComputerBox(DesktopBox):
    """A desktop (``DISPLAY=:1``, 1024x768 by default) with mouse, keyboard and screenshots.

    Without ``image``/``rootfs_path`` the desktop image is built from Debian packages on first
    use (cached under the runtime's home). A person can watch and take over through
    :meth:`novnc_url` (published on host loopback only, VNC password in the URL).
    """

    def __init__(
        self,
        cpu: int = COMPUTERBOX_CPUS,
        memory: int = COMPUTERBOX_MEMORY_MIB,
        gui_http_port: int | None = None,
        gui_https_port: int | None = None,
        runtime: Boxlite | None = None,
        *,
        width: int = DISPLAY_WIDTH,
        height: int = DISPLAY_HEIGHT,
        max_screenshot_bytes: int = MAX_SCREENSHOT_BYTES,
        action_timeout: float = ACTION_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        if gui_https_port is not None:
            raise ConfigError("gui_https_port: this ComputerBox serves noVNC over HTTP on host loopback only")
        self._max_shot = int(_positive(max_screenshot_bytes, "max_screenshot_bytes"))
        super().__init__(
            gui_http_port, width=width, height=height, action_timeout=action_timeout, memory_mib=memory, cpus=cpu,
            runtime=runtime, **kwargs,
        )  # fmt: skip

    # --- lifecycle --------------------------------------------------------------------------
    async def __aenter__(self) -> ComputerBox:
        if self._options.image is None and self._options.rootfs_path is None:
            runtime = self._runtime or Boxlite.default()
            self._options.image = await asyncio.to_thread(recipe_image, "desktop", runtime.home.root)
        await super().__aenter__()
        if self._session is None:
            try:
                await self._start_session()
            except BaseException:
                await self.stop()
                raise
        return self

    async def start(self) -> ComputerBox:
        return await self.__aenter__()

    # --- screen ------------------------------------------------------------------------------
    async def screenshot(self) -> dict[str, Any]:
        """The screen as PNG: ``{"data": base64 PNG, "width", "height", "format": "png"}`` (as BoxLite)."""
        png, width, height = await self.screenshot_png()
        return {"data": base64.b64encode(png).decode("ascii"), "width": width, "height": height, "format": "png"}

    async def screenshot_png(self) -> tuple[bytes, int, int]:
        """The screen as (PNG bytes, width, height); the box sends at most ``max_screenshot_bytes``."""
        raw = await self._run("xwd", "-root", "-silent", limit=self._max_shot, too_large=ScreenshotTooLargeError)
        return await asyncio.to_thread(xwd_to_png, raw)

    async def get_screen_size(self) -> tuple[int, int]:
        out = await self._run("xdotool", "getdisplaygeometry")
        parts = out.split()
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise ParseError(f"unexpected xdotool getdisplaygeometry output {out[:80]!r}")
        return int(parts[0]), int(parts[1])

    async def cursor_position(self) -> tuple[int, int]:
        out = await self._run("xdotool", "getmouselocation", "--shell")
        values = dict(line.split("=", 1) for line in out.decode("ascii", "replace").splitlines() if "=" in line)
        try:
            return int(values["X"]), int(values["Y"])
        except (KeyError, ValueError):
            raise ParseError(f"unexpected xdotool getmouselocation output {out[:80]!r}") from None

    # --- mouse -------------------------------------------------------------------------------
    async def mouse_move(self, x: int, y: int) -> None:
        await self._run("xdotool", "mousemove", "--sync", _coordinate(x, "x"), _coordinate(y, "y"))

    async def left_click(self) -> None:
        await self._run("xdotool", "click", "1")

    async def right_click(self) -> None:
        await self._run("xdotool", "click", "3")

    async def middle_click(self) -> None:
        await self._run("xdotool", "click", "2")

    async def double_click(self) -> None:
        await self._run("xdotool", "click", "--repeat", "2", "--delay", "100", "1")

    async def triple_click(self) -> None:
        await self._run("xdotool", "click", "--repeat", "3", "--delay", "100", "1")

    async def left_click_drag(self, start_x: int, start_y: int, end_x: int, end_y: int) -> None:
        sx, sy = _coordinate(start_x, "start_x"), _coordinate(start_y, "start_y")
        ex, ey = _coordinate(end_x, "end_x"), _coordinate(end_y, "end_y")
        await self._run(
            "xdotool", "mousemove", "--sync", sx, sy, "mousedown", "1", "sleep", "0.1",
            "mousemove", "--sync", ex, ey, "sleep", "0.1", "mouseup", "1",
        )  # fmt: skip

    async def scroll(self, x: int, y: int, direction: str, amount: int = 3) -> None:
        """Scroll ``amount`` steps ``direction`` ('up', 'down', 'left', 'right') at (x, y)."""
        button = SCROLL_BUTTONS.get(direction.lower()) if isinstance(direction, str) else None
        if button is None:
            raise ConfigError(f"scroll direction must be one of {', '.join(SCROLL_BUTTONS)}, got {direction!r}")
        if isinstance(amount, bool) or not isinstance(amount, int) or not 1 <= amount <= 100:
            raise ConfigError(f"scroll amount must be an integer from 1 to 100, got {amount!r}")
        await self._run(
            "xdotool", "mousemove", "--sync", _coordinate(x, "x"), _coordinate(y, "y"),
            "click", "--repeat", str(amount), button,
        )  # fmt: skip

    # --- keyboard ----------------------------------------------------------------------------
    async def type(self, text: str) -> None:
        """Type ``text`` as keystrokes (it is one argv entry: never interpreted by a shell)."""
        if not isinstance(text, str):
            raise ConfigError(f"type() takes a str, got {type(text).__name__}")
        if len(text) > MAX_TYPE_CHARS:
            raise ConfigError(f"type() takes at most {MAX_TYPE_CHARS} characters, got {len(text)}")
        if "\x00" in text:
            raise ConfigError("type() text must not contain NUL")
        if text:
            timeout = self._action_timeout + len(text) * 0.05
            await self._run("xdotool", "type", "--delay", "12", "--", text, timeout=timeout)

    async def key(self, text: str) -> None:
        """Press keys, e.g. ``"Return"``, ``"ctrl+a"``, ``"ctrl+a BackSpace"`` (xdotool key names)."""
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"key() takes a non-empty str of xdotool key names, got {text!r}")
        keys = text.split()
        if len(keys) > 256 or any(len(k) > 64 or k.startswith("-") for k in keys):
            raise ConfigError(f"key() takes up to 256 key names of at most 64 characters, got {text[:80]!r}")
        await self._run("xdotool", "key", "--", *keys)

    # --- extras ------------------------------------------------------------------------------
    async def launch(self, program: str, *args: str) -> Execution:
        """Start a GUI program on the display and return without waiting for it (it runs until
        it exits or the box stops)."""
        if not isinstance(program, str) or not all(isinstance(a, str) for a in args):
            raise ConfigError("launch() takes a program and str arguments")
        return await self.box.exec(program, list(args), env={"DISPLAY": DISPLAY}, stdin=False)
