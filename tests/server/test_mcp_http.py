"""``boxlite serve --mcp``: MCP over streamable HTTP at ``/mcp`` of the REST server, behind its
API key, driven by the ``mcp`` SDK's own client."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcpflow import (
    desktop_flow,
    desktop_limit,
    error_text,
    every_tool,
    hostile_requests,
    link_desktop_image,
    load_busybox,
)

from rest.serverproc import API_KEY, free_port, stop_server, wait_ready

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``boxlite serve --mcp`` on a free loopback port with an API key; yields its base URL."""
    import asyncio

    home = tmp_path_factory.mktemp("mcp") / "home"
    asyncio.run(load_busybox(home))
    link_desktop_image(home)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    env.setdefault("BOXLITE_ENGINE", os.environ.get("BOXLITE_TEST_ENGINES", "namespace").split(",")[0])
    args = ["--home", str(home), "serve", "--host", "127.0.0.1", "--port", str(port), "--api-key", API_KEY, "--mcp"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "boxlite.cli", *args], env=env, stdin=subprocess.PIPE, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url)
        yield url
    finally:
        stop_server(proc)


def client(url: str, key: str = API_KEY, timeout: float = 60) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=timeout)
    return Client(streamable_http_client(f"{url}/mcp", http_client=http), read_timeout_seconds=timeout)


async def test_every_tool_over_http(server: str) -> None:
    async with client(server) as c:
        await every_tool(c)


async def test_bad_requests_are_tool_errors_over_http(server: str) -> None:
    async with client(server) as c:
        await hostile_requests(c)


async def test_a_wrong_api_key_is_refused(server: str) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    for headers in ({}, {"Authorization": "Bearer wrong-key"}):
        r = httpx.post(f"{server}/mcp", json=body, headers={"Accept": "application/json, text/event-stream", **headers})
        assert r.status_code == 401 and "tools" not in r.text
    with pytest.raises(Exception) as info:  # the SDK's client: the connection fails, nothing listed
        async with client(server, key="wrong-key") as c:
            await c.list_tools()
    assert info.group_contains(MCPError)


async def test_a_tool_cannot_pull_from_an_internal_address(server: str) -> None:
    """An MCP client over TCP is a REST client: its pulls reach public addresses only
    (tests/security/test_sec_rest_registries.py has the rest)."""
    with socket.create_server(("127.0.0.1", 0)) as internal:
        ref = f"127.0.0.1:{internal.getsockname()[1]}/x:1"
        async with client(server) as c:
            refused = error_text(await c.call_tool("create_box", {"image": ref, "name": "mcp-internal"}))
        assert "PermissionDeniedError" in refused and "not at a public address" in refused
        assert select.select([internal], [], [], 0)[0] == []  # nobody connected


@pytest.mark.timeout(1800)  # the first run on a machine builds the desktop image (test cache)
async def test_desktop_box_over_http(server: str) -> None:
    async with client(server, timeout=3 * desktop_limit()) as c:
        await desktop_flow(c)
