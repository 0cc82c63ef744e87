"""MCP tools over a desktop box (``ComputerBox``): create one, look at it, drive mouse and keyboard.

One tool per action, each with its own schema (an agent sees what each takes); the action names
follow the "computer use" vocabulary (screenshot, mouse_move, click, drag, scroll, type, key).
Every action runs with the desktop's deadline; the screenshot is bounded twice (raw bytes from
the box, PNG bytes to the client).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, ImageContent, TextContent

from ..api.box import Box
from ..api.runtime import Boxlite
from ..errors import ConfigError, ResourceExhaustedError
from . import limits
from .desktops import Desktop, Desktops
from .toolerror import typed

Find = Callable[[str], Awaitable[Box]]
Info = Callable[[Box], dict[str, Any]]

CREATE_DOC = f"""Create and start a desktop box (Linux, X11 with the openbox window manager, xterm and small
X programs such as xedit) for the desktop tools (screenshot, mouse_move, click, drag, scroll,
type_text, press_keys, cursor_position, launch). Returns the box's info, its ``screen`` size and
``novnc_url`` (a page on the server's loopback where a person can watch, password included).
``width`` x ``height``: {limits.MIN_SCREEN_SIDE}..{limits.MAX_SCREEN_SIDE} pixels a side, at most
{limits.MAX_SCREEN_PIXELS} pixels. ``timeout`` (default {limits.DESKTOP_CREATE_TIMEOUT:g} s) covers a
first use, which builds the desktop image (minutes); ``action_timeout`` (default
{limits.DESKTOP_ACTION_TIMEOUT:g} s) bounds each later action. exec, files and remove_box work on it
as on any box."""
SCREENSHOT_DOC = f"""The desktop's screen as a PNG image (at most {limits.MAX_SCREENSHOT_PNG} bytes),
followed by a text block with its width and height. Coordinates of the other tools are pixels of
this image, (0, 0) at the top left."""
CLICK_DOC = """Click a mouse button: at (x, y) if given (the pointer moves there first), else where the
pointer is. ``count`` 2 or 3 double/triple-clicks (left button only)."""
TYPE_DOC = f"""Type text as keystrokes into the focused window (at most {limits.MAX_TYPE_TEXT} characters;
use press_keys for Return, Tab, shortcuts)."""
KEYS_DOC = """Press keys or key combinations (xdotool key names, space-separated, pressed in order):
"Return", "ctrl+c", "ctrl+a BackSpace", "alt+F4", "Escape"."""
LAUNCH_DOC = f"""Start a GUI program on the desktop (``command`` as an argv list, e.g. ["xterm"] or
["xedit", "/tmp/notes.txt"]) and return without waiting for it; its output is discarded. At most
{limits.MAX_LAUNCHED} launched programs run at once. (exec waits for its command to exit.)"""

DONE = {"ok": True}


def register(server: MCPServer, runtime: Callable[[], Boxlite], find: Find, info: Info, desktops: Desktops) -> None:
    """Add the desktop tools to ``server`` (boxes looked up with ``find``)."""

    async def desktop(box: str) -> Desktop:
        return desktops.get((await find(box)).id, box)

    @server.tool(description=CREATE_DOC)
    @typed
    async def create_computer_box(
        ctx: Context,
        name: str | None = None,
        cpus: int | None = None,
        memory_mib: int | None = None,
        width: int = 1024,
        height: int = 768,
        action_timeout: float | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        computer = await desktops.create(
            runtime(), name=name, cpus=cpus, memory_mib=memory_mib, width=width, height=height,
            action_timeout=action_timeout, timeout=timeout, progress=ctx.report_progress,
        )  # fmt: skip
        return {**info(computer.box), "screen": {"width": width, "height": height}, "novnc_url": computer.novnc_url()}

    @server.tool(description=SCREENSHOT_DOC)
    @typed
    async def screenshot(box: str) -> CallToolResult:
        found = await desktop(box)
        png, width, height = await desktops.act(found, 1, lambda c: c.screenshot_png())
        if len(png) > limits.MAX_SCREENSHOT_PNG:
            raise ResourceExhaustedError(f"screenshot PNG of {len(png)} bytes, more than {limits.MAX_SCREENSHOT_PNG}")
        meta = {"width": width, "height": height, "format": "png", "bytes": len(png)}
        return CallToolResult(
            content=[
                ImageContent(type="image", data=base64.b64encode(png).decode("ascii"), mime_type="image/png"),
                TextContent(type="text", text=json.dumps(meta)),
            ]
        )

    @server.tool()
    @typed
    async def mouse_move(box: str, x: int, y: int) -> dict[str, Any]:
        """Move the mouse pointer to (x, y), pixels of the screenshot."""
        await desktops.act(await desktop(box), 1, lambda c: c.mouse_move(x, y))
        return DONE

    @server.tool(description=CLICK_DOC)
    @typed
    async def click(
        box: str,
        x: int | None = None,
        y: int | None = None,
        button: Literal["left", "right", "middle"] = "left",
        count: Literal[1, 2, 3] = 1,
    ) -> dict[str, Any]:
        if (x is None) != (y is None):
            raise ConfigError("pass both x and y, or neither")
        if count != 1 and button != "left":
            raise ConfigError("double and triple clicks are of the left button")
        press = {
            ("left", 1): "left_click", ("left", 2): "double_click", ("left", 3): "triple_click",
            ("right", 1): "right_click", ("middle", 1): "middle_click",
        }[(button, count)]  # fmt: skip

        async def act(c: Any) -> None:
            if x is not None and y is not None:
                await c.mouse_move(x, y)
            await getattr(c, press)()

        await desktops.act(await desktop(box), 2, act)
        return DONE

    @server.tool()
    @typed
    async def drag(box: str, start_x: int, start_y: int, end_x: int, end_y: int) -> dict[str, Any]:
        """Press the left button at (start_x, start_y), move to (end_x, end_y) and release it."""
        await desktops.act(await desktop(box), 1, lambda c: c.left_click_drag(start_x, start_y, end_x, end_y))
        return DONE

    @server.tool()
    @typed
    async def scroll(
        box: str, x: int, y: int, direction: Literal["up", "down", "left", "right"], amount: int = 3
    ) -> dict[str, Any]:
        """Move the pointer to (x, y) and scroll ``amount`` (1-100) wheel steps in ``direction``."""
        await desktops.act(await desktop(box), 1, lambda c: c.scroll(x, y, direction, amount))
        return DONE

    @server.tool(description=TYPE_DOC)
    @typed
    async def type_text(box: str, text: str) -> dict[str, Any]:
        if len(text) > limits.MAX_TYPE_TEXT:
            raise ConfigError(f"type_text takes at most {limits.MAX_TYPE_TEXT} characters, got {len(text)}")
        found = await desktop(box)
        # ComputerBox gives typing 50 ms per character beyond the action timeout.
        steps = 1 + len(text) * 0.05 / found.action_timeout
        await desktops.act(found, steps, lambda c: c.type(text))
        return DONE

    @server.tool(description=KEYS_DOC)
    @typed
    async def press_keys(box: str, keys: str) -> dict[str, Any]:
        await desktops.act(await desktop(box), 1, lambda c: c.key(keys))
        return DONE

    @server.tool()
    @typed
    async def cursor_position(box: str) -> dict[str, Any]:
        """Where the mouse pointer is: ``x``, ``y``."""
        x, y = await desktops.act(await desktop(box), 1, lambda c: c.cursor_position())
        return {"x": x, "y": y}

    @server.tool(description=LAUNCH_DOC)
    @typed
    async def launch(box: str, command: list[str]) -> dict[str, Any]:
        await desktops.launch(await desktop(box), command)
        return {"launched": command[0]}
