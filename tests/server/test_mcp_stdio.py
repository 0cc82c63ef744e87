"""``boxlite mcp`` over stdio, driven by the ``mcp`` SDK's own client (a spawned CLI process)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcpflow import (
    IMAGE,
    desktop_flow,
    desktop_limit,
    error_text,
    every_tool,
    hostile_requests,
    link_desktop_image,
    load_busybox,
    result,
)

from boxlite.mcp import limits
from rest.serverproc import start_server, stop_server, wait_ready
from support.images import python_layout

SRC = Path(__file__).resolve().parents[2] / "src"


def stdio_server(home: Path, *extra: str) -> StdioServerParameters:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    env.setdefault("BOXLITE_ENGINE", os.environ.get("BOXLITE_TEST_ENGINES", "namespace").split(",")[0])
    return StdioServerParameters(
        command=sys.executable, args=["-m", "boxlite.cli", "--home", str(home), "mcp", *extra], env=env
    )


async def test_every_tool_over_stdio(tmp_path: Path) -> None:
    await load_busybox(tmp_path / "home")
    async with Client(stdio_server(tmp_path / "home"), read_timeout_seconds=60) as client:
        await every_tool(client)


async def test_bad_requests_are_tool_errors_over_stdio(tmp_path: Path) -> None:
    await load_busybox(tmp_path / "home")
    async with Client(stdio_server(tmp_path / "home"), read_timeout_seconds=60) as client:
        await hostile_requests(client)


@pytest.mark.timeout(1800)  # the first run on a machine builds the desktop image (test cache)
async def test_desktop_box_over_stdio(tmp_path: Path) -> None:
    home = tmp_path / "home"
    await load_busybox(home)
    await asyncio.to_thread(link_desktop_image, home)
    async with Client(stdio_server(home), read_timeout_seconds=3 * desktop_limit()) as client:
        await desktop_flow(client)


async def test_run_code_in_a_fresh_codebox_and_box_logs(tmp_path: Path) -> None:
    """run_code without a box creates a CodeBox from the image and removes it afterwards."""
    home = tmp_path / "home"
    await load_busybox(home)
    import boxlite

    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home)))
    (py,) = await rt.images.load(python_layout())
    await rt.shutdown()
    async with Client(stdio_server(home), read_timeout_seconds=120) as client:
        ran = result(await client.call_tool("run_code", {"code": "print(6 * 7)", "image": py.reference}))
        assert (ran["exit_code"], ran["stdout"]) == (0, "42\n")
        assert result(await client.call_tool("list_boxes", {})) == []
        failed = result(await client.call_tool("run_code", {"code": "raise SystemExit(5)", "image": py.reference}))
        assert failed["exit_code"] == 5
        # a box's main-process log, as a resource (bounded tail)
        main = ["sh", "-c", "echo started; head -c 100000 /dev/zero | tr '\\0' x; echo; echo tail-line; sleep 100"]
        box = result(await client.call_tool("create_box", {"image": IMAGE, "name": "logged", "cmd": main}))
        for _ in range(100):
            text = (await client.read_resource("boxlite://boxes/logged/logs")).contents[0].text  # type: ignore[union-attr]
            if "tail-line" in text:
                break
            await asyncio.sleep(0.1)
        assert text.endswith("tail-line\n") and len(text.encode()) <= limits.LOG_TAIL  # the end, bounded
        with pytest.raises(MCPError):
            await client.read_resource("boxlite://boxes/no-such-box/logs")
        assert result(await client.call_tool("remove_box", {"box": box["id"], "force": True}))["removed"]


async def test_every_tool_over_a_rest_backend(tmp_path: Path) -> None:
    """``boxlite mcp --url``: the same tools on the boxes of a ``boxlite serve`` (logs excepted)."""
    home = tmp_path / "server-home"
    await load_busybox(home)
    proc = start_server(home)
    try:
        wait_ready(proc, f"unix://{home / 'boxlite.sock'}")
        params = stdio_server(tmp_path / "unused", "--url", f"unix://{home / 'boxlite.sock'}")
        async with Client(params, read_timeout_seconds=60) as client:
            await every_tool(client)
            # a desktop's image and session live with the runtime: not over a REST backend
            refused = error_text(await client.call_tool("create_computer_box", {}))
            assert "UnsupportedOptionError: " in refused and "local runtime" in refused
            assert result(await client.call_tool("list_boxes", {})) == []
    finally:
        stop_server(proc)
