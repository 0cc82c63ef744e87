"""What both MCP transport tests drive: every tool once, and requests a hostile agent sends."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from mcp import Client
from mcp.types import CallToolResult

import boxlite
from boxlite.mcp import limits
from support.images import busybox_layout

IMAGE = "localhost/busybox:latest"
TOOLS = {
    "create_box", "list_boxes", "stop_box", "remove_box", "exec", "run_code", "write_file", "read_file", "list_files",
}  # fmt: skip


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
    assert names == TOOLS  # no screenshot tool: ComputerBox is not available yet
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
