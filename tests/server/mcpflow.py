"""What both MCP transport tests drive: every tool once, and requests a hostile agent sends."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from pathlib import Path
from typing import Any

from mcp import Client
from mcp.types import CallToolResult, ImageContent, TextContent

import boxlite
from boxlite.mcp import limits
from support.desktop import changed_pixels, desktop_rootfs, read_png
from support.images import busybox_layout

IMAGE = "localhost/busybox:latest"
DESKTOP_TOOLS = {
    "create_computer_box", "screenshot", "mouse_move", "click", "drag", "scroll", "type_text", "press_keys",
    "cursor_position", "launch",
}  # fmt: skip
TOOLS = {
    "create_box", "list_boxes", "stop_box", "remove_box", "exec", "run_code", "write_file", "read_file", "list_files",
    *DESKTOP_TOOLS,
}  # fmt: skip


def desktop_limit() -> float:
    """Seconds a desktop step may take: the VM engine runs under TCG on a shared machine."""
    engine = os.environ.get("BOXLITE_TEST_ENGINES", "namespace").split(",")[0]
    return 600.0 if engine == "vm" else 120.0


def link_desktop_image(home: Path) -> None:
    """Put the desktop image (built once per machine in the test cache) where the home's
    ``create_computer_box`` looks for it, so no test builds it again."""
    built = desktop_rootfs()
    link = home / "images" / "desktop" / "rootfs" / built.name
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(built)


async def load_busybox(home: Path) -> None:
    """Put the busybox test image into ``home``'s store (the MCP tools take no host paths)."""
    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home)))
    try:
        await rt.images.load(busybox_layout())
    finally:
        await rt.shutdown()


def result(r: CallToolResult) -> Any:
    assert not r.is_error, r.content
    data = r.structured_content
    if data is None:
        data = json.loads(r.content[0].text)  # type: ignore[union-attr]
    return data["result"] if set(data) == {"result"} else data


def error_text(r: CallToolResult) -> str:
    assert r.is_error, r.structured_content
    return r.content[0].text  # type: ignore[union-attr]


async def every_tool(client: Client) -> None:
    """create, exec (with progress), write+read, list, stop, remove: each one works."""
    names = {t.name for t in (await client.list_tools()).tools}
    assert names == TOOLS
    box = result(await client.call_tool("create_box", {"image": IMAGE, "name": "mcp-one"}))
    assert box["name"] == "mcp-one" and box["state"]["running"]

    progress: list[str] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    cmd = ["sh", "-c", "echo hello; echo oops >&2; exit 3"]
    ran = result(await client.call_tool("exec", {"box": "mcp-one", "command": cmd}, progress_callback=on_progress))
    assert (ran["exit_code"], ran["stdout"], ran["stderr"], ran["timed_out"]) == (3, "hello\n", "oops\n", False)
    assert "hello\n" in progress and "[stderr] oops\n" in progress

    written = result(
        await client.call_tool("write_file", {"box": box["id"], "path": "/tmp/a.txt", "content": "data\n"})
    )
    assert written == {"path": "/tmp/a.txt", "size": 5}
    read = result(await client.call_tool("read_file", {"box": "mcp-one", "path": "/tmp/a.txt"}))
    assert read["content"] == "data\n"
    raw = bytes(range(256))
    args = {"box": "mcp-one", "path": "/tmp/bin", "content_base64": base64.b64encode(raw).decode(), "mode": 0o600}
    result(await client.call_tool("write_file", args))
    back = result(await client.call_tool("read_file", {"box": "mcp-one", "path": "/tmp/bin", "binary": True}))
    assert base64.b64decode(back["content_base64"]) == raw
    ran = result(await client.call_tool("exec", {"box": "mcp-one", "command": ["stat", "-c", "%a", "/tmp/bin"]}))
    assert ran["stdout"] == "600\n"
    listing = result(await client.call_tool("list_files", {"box": "mcp-one", "path": "/tmp"}))
    entries = {e["name"]: e for e in listing["entries"]}
    assert entries["a.txt"]["type"] == "file" and entries["a.txt"]["size"] == 5 and not listing["truncated"]

    boxes = result(await client.call_tool("list_boxes", {}))
    assert [b["id"] for b in boxes] == [box["id"]]
    stopped = result(await client.call_tool("stop_box", {"box": "mcp-one"}))
    assert stopped["state"]["status"] == "stopped"
    assert result(await client.call_tool("remove_box", {"box": "mcp-one"})) == {"id": box["id"], "removed": True}
    assert result(await client.call_tool("list_boxes", {})) == []


async def hostile_requests(client: Client) -> None:
    """Bad requests get tool errors; the box's output and files are capped; the server lives on."""
    assert "NotFoundError" in error_text(await client.call_tool("exec", {"box": "no-such-box", "command": ["true"]}))
    assert "NotFoundError" in error_text(await client.call_tool("read_file", {"box": "nope", "path": "/etc/passwd"}))
    result(await client.call_tool("create_box", {"image": IMAGE, "name": "mcp-bad"}))
    big = {"box": "mcp-bad", "path": "/tmp/big", "content": "x" * (limits.MAX_FILE + 1)}
    assert "ResourceExhaustedError" in error_text(await client.call_tool("write_file", big))
    rel = {"box": "mcp-bad", "path": "tmp/a", "content": "x"}
    assert "ConfigError" in error_text(await client.call_tool("write_file", rel))
    # a file the box grew past the limit is refused (only its header is read)
    make = ["dd", "if=/dev/zero", "of=/tmp/huge", "bs=1024", f"count={limits.MAX_FILE // 1024 + 1}"]
    result(await client.call_tool("exec", {"box": "mcp-bad", "command": make}))
    huge = await client.call_tool("read_file", {"box": "mcp-bad", "path": "/tmp/huge"})
    assert "ResourceExhaustedError" in error_text(huge)
    # output past the cap is counted, not kept; a command past its timeout is killed
    flood = ["sh", "-c", f"yes | head -c {limits.MAX_OUTPUT + 1000}"]
    ran = result(await client.call_tool("exec", {"box": "mcp-bad", "command": flood}))
    assert len(ran["stdout"]) == limits.MAX_OUTPUT and ran["stdout_truncated_bytes"] == 1000
    slow = result(await client.call_tool("exec", {"box": "mcp-bad", "command": ["sleep", "60"], "timeout": 1}))
    assert slow["timed_out"] and slow["exit_code"] != 0
    bad_timeout = await client.call_tool("exec", {"box": "mcp-bad", "command": ["true"], "timeout": 1e9})
    assert "ConfigError" in error_text(bad_timeout)
    # arguments outside the schema: refused by the SDK, still a tool error
    assert error_text(await client.call_tool("exec", {"box": "mcp-bad", "command": "not-a-list"}))
    assert result(await client.call_tool("remove_box", {"box": "mcp-bad", "force": True}))["removed"]
    assert result(await client.call_tool("list_boxes", {})) == []


async def screenshot(client: Client, box: str) -> tuple[dict[str, Any], list[bytes]]:
    """One ``screenshot`` call: (its text block, the PNG's RGB rows); the image is a valid PNG of
    the size the text reports."""
    r = await client.call_tool("screenshot", {"box": box})
    assert not r.is_error, r.content
    image, text = r.content
    assert isinstance(image, ImageContent) and isinstance(text, TextContent)
    assert image.mime_type == "image/png"
    png = base64.b64decode(image.data)
    meta = json.loads(text.text)
    width, height, rows = read_png(png)
    assert (width, height, meta["bytes"], meta["format"]) == (meta["width"], meta["height"], len(png), "png")
    assert len(png) <= limits.MAX_SCREENSHOT_PNG
    return meta, rows


async def wait_window(client: Client, box: str, title: str, limit: float) -> dict[str, int]:
    """Geometry (X, Y, WIDTH, HEIGHT) of the visible window ``title``, through the exec tool."""
    deadline = time.monotonic() + limit
    while True:
        search = ["xdotool", "search", "--onlyvisible", "--name", f"^{title}$"]
        ids = result(await client.call_tool("exec", {"box": box, "command": search}))["stdout"].split()
        if ids:
            geometry = ["xdotool", "getwindowgeometry", "--shell", ids[0]]
            out = result(await client.call_tool("exec", {"box": box, "command": geometry}))["stdout"]
            values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
            return {k: int(values[k]) for k in ("X", "Y", "WIDTH", "HEIGHT")}
        assert time.monotonic() < deadline, f"no window {title!r} after {limit} s"
        await asyncio.sleep(0.5)


async def desktop_flow(client: Client) -> None:
    """A desktop box over MCP: screenshots are PNGs of the screen's size, typed text changes the
    next one, the pointer goes where it is sent; bad input and a box that is no desktop get tool
    errors; removing the box ends its desktop."""
    limit = desktop_limit()
    args = {"name": "desk", "width": 800, "height": 600, "action_timeout": limit, "timeout": 2 * limit}
    try:
        desk = result(await client.call_tool("create_computer_box", args))
        assert desk["screen"] == {"width": 800, "height": 600} and desk["state"]["running"]
        assert desk["novnc_url"].startswith("http://127.0.0.1:") and "password=" in desk["novnc_url"]
        meta, _ = await screenshot(client, "desk")
        assert (meta["width"], meta["height"]) == (800, 600)

        xedit = ["xedit", "-title", "mcp-edit", "-geometry", "420x300+20+20"]
        assert result(await client.call_tool("launch", {"box": "desk", "command": xedit})) == {"launched": "xedit"}
        win = await wait_window(client, "desk", "mcp-edit", limit)
        text_x, text_y = win["X"] + 150, win["Y"] + win["HEIGHT"] - 60  # xedit's editing area
        assert result(await client.call_tool("click", {"box": "desk", "x": text_x, "y": text_y}))["ok"]
        _, before = await screenshot(client, "desk")
        assert result(await client.call_tool("type_text", {"box": desk["id"], "text": "typed over MCP; $(reboot)"}))
        _, after = await screenshot(client, "desk")
        region = (win["X"], win["Y"], win["X"] + win["WIDTH"], win["Y"] + win["HEIGHT"])
        assert changed_pixels(before, after, *region) > 200
        assert changed_pixels(before, after, 500, 350, 800, 600) == 0  # outside the window: nothing

        # The pointer goes where the tools send it.
        result(await client.call_tool("press_keys", {"box": "desk", "keys": "Return ctrl+e"}))
        result(await client.call_tool("mouse_move", {"box": "desk", "x": 600, "y": 400}))
        assert result(await client.call_tool("cursor_position", {"box": "desk"})) == {"x": 600, "y": 400}
        drag = {"box": "desk", "start_x": 600, "start_y": 400, "end_x": 650, "end_y": 450}
        result(await client.call_tool("drag", drag))
        result(await client.call_tool("scroll", {"box": "desk", "x": 100, "y": 120, "direction": "down"}))
        assert result(await client.call_tool("cursor_position", {"box": "desk"})) == {"x": 100, "y": 120}
        result(await client.call_tool("click", {"box": "desk", "button": "right"}))

        # Bad input: typed tool errors before anything runs in the box.
        bad = [
            ("click", {"box": "desk", "x": 5}, "ConfigError"),
            ("click", {"box": "desk", "button": "right", "count": 2}, "ConfigError"),
            ("mouse_move", {"box": "desk", "x": -1, "y": 0}, "ConfigError"),
            ("type_text", {"box": "desk", "text": "x" * (limits.MAX_TYPE_TEXT + 1)}, "ConfigError"),
            ("press_keys", {"box": "desk", "keys": "--help"}, "ConfigError"),
            ("scroll", {"box": "desk", "x": 1, "y": 1, "direction": "down", "amount": 1000}, "ConfigError"),
            ("launch", {"box": "desk", "command": []}, "ConfigError"),
            ("create_computer_box", {"width": 100_000}, "ConfigError"),
        ]
        for tool, arguments, kind in bad:
            text = error_text(await client.call_tool(tool, arguments))
            assert f"{kind}: " in text, (tool, arguments, text)

        # A box that is no desktop: a clear tool error, for every desktop tool.
        result(await client.call_tool("create_box", {"image": IMAGE, "name": "plain"}))
        refused = error_text(await client.call_tool("screenshot", {"box": "plain"}))
        assert "ConfigError: box 'plain' is not a desktop box" in refused
        assert "not a desktop box" in error_text(await client.call_tool("type_text", {"box": "plain", "text": "x"}))
    finally:
        for name in ("desk", "plain"):
            await client.call_tool("remove_box", {"box": name, "force": True})
    assert "NotFoundError" in error_text(await client.call_tool("screenshot", {"box": "desk"}))
    assert result(await client.call_tool("list_boxes", {})) == []
