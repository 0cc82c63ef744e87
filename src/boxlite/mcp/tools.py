"""The MCP server: tools over boxes, and their logs as resources, on the public API (``Boxlite``
and ``Box``, whatever backend the runtime has: a local home or a REST server).

Tools answer a ``BoxliteError`` with an MCP tool error (``isError``) naming its type, never a
crash; arguments that fail their schema are refused by the SDK before a tool runs. No tool
takes a host path: images come from the runtime's image store or its registries, files move
between the client and the box only.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError

from .. import __version__
from ..api.box import Box
from ..api.logs import box_log_tail
from ..api.options import BoxOptions
from ..api.runtime import Boxlite
from ..api.simplebox import CodeBox
from ..errors import BoxliteError, ConfigError, NotFoundError, ResourceExhaustedError
from . import boxfiles, desktop_tools, execs, limits
from .desktops import Desktops
from .toolerror import typed as _typed

RuntimeSource = Callable[[], Boxlite]

INSTRUCTIONS = """Run commands in isolated BoxLite boxes. Create a box from an image (create_box), run
commands in it (exec; output also arrives as progress notifications), move files in and out
(write_file, read_file, list_files), then stop_box/remove_box. run_code runs Python source.
A desktop box (create_computer_box) is also driven with screenshot, mouse_move, click, drag,
scroll, type_text, press_keys, cursor_position and launch.
Paths are paths inside the box. Output and files are capped; see each tool's description."""

EXEC_DOC = f"""Run ``command`` (an argv list) in a box to its end; returns exit code and output.
Output arrives meanwhile as progress notifications (stderr slices start "[stderr] "). Each stream
keeps its first {limits.MAX_OUTPUT} bytes (the rest is counted, not kept). ``timeout`` defaults to
{limits.DEFAULT_TIMEOUT:g}s (at most {limits.MAX_TIMEOUT:g}s); ``stdin`` is text fed to the command."""
WRITE_DOC = f"""Write a file in a box (absolute path; its directory must exist): ``content`` as UTF-8
text or ``content_base64`` for bytes; at most {limits.MAX_FILE} bytes."""
READ_DOC = f"""Read a regular file of a box (absolute path, at most {limits.MAX_FILE} bytes): as text
(invalid UTF-8 replaced) or, with ``binary``, base64 in ``content_base64``."""
LIST_DOC = f"""Entries directly under a directory of a box (name, type, size, mode, mtime, link); at most
{limits.MAX_LIST_ENTRIES} (``truncated`` says when there are more or the tree was too large to scan)."""
LOGS_DOC = f"""The end (last {limits.LOG_TAIL} bytes) of the output of a box's main process."""


def _info(box: Box) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(box.info().to_dict(), default=str))
    return data


def build_server(runtime: RuntimeSource) -> MCPServer:
    """The MCP server; ``runtime()`` gives the ``Boxlite`` to work on (called per request, so an
    HTTP server can create its runtime at startup)."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    server: MCPServer = MCPServer("boxlite", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING")
    root.setLevel(level)  # the SDK configures the root logger: leave the host application's logging alone
    root.handlers[:] = handlers

    async def find(box: str) -> Box:
        found = await runtime().get(box)
        if found is None:
            raise NotFoundError(f"no box with id or name {box!r}")
        return found

    desktops = Desktops()

    @server.tool()
    @_typed
    async def create_box(
        image: str,
        name: str | None = None,
        cpus: float | None = None,
        memory_mib: int | None = None,
        env: dict[str, str] | None = None,
        working_dir: str | None = None,
        cmd: list[str] | None = None,
    ) -> dict[str, Any]:
        """Create and start a box from an OCI image reference (pulled if the store lacks it).
        ``cmd`` replaces the image's CMD as the box's main process (its output: the box's logs
        resource). The box is kept when stopped: remove it with remove_box."""
        execs.check_command(cmd or ["-"], env)
        options = BoxOptions(
            image=image, cpus=cpus, memory_mib=memory_mib, env=dict(env or {}), working_dir=working_dir,
            auto_remove=False, cmd=cmd,
        )  # fmt: skip
        box = await runtime().create(options, name)
        try:
            await box.start()
        except BoxliteError:
            await runtime().remove(box.id, force=True)
            raise
        return _info(box)

    @server.tool()
    @_typed
    async def list_boxes(state: str | None = None) -> list[dict[str, Any]]:
        """Boxes of this runtime (optionally only those in ``state``: running, stopped, ...)."""
        infos = await runtime().list_info(state)
        return [json.loads(json.dumps(i.to_dict(), default=str)) for i in infos]

    @server.tool()
    @_typed
    async def stop_box(box: str, timeout: float | None = None) -> dict[str, Any]:
        """Stop a box (its processes get SIGTERM, then SIGKILL after ``timeout`` seconds)."""
        found = await find(box)
        await found.stop(execs.check_timeout(timeout) if timeout is not None else None)
        await desktops.forget(found.id)  # a desktop's session ends with its box
        return _info(found)

    @server.tool()
    @_typed
    async def remove_box(box: str, force: bool = False) -> dict[str, Any]:
        """Delete a box and its data (``force``: stop it first if it runs)."""
        found = await find(box)
        await runtime().remove(found.id, force=force)
        await desktops.forget(found.id)
        return {"id": found.id, "removed": True}

    @server.tool(name="exec", description=EXEC_DOC)
    @_typed
    async def exec_(
        box: str,
        command: list[str],
        ctx: Context,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
        timeout: float | None = None,
        stdin: str | None = None,
    ) -> dict[str, Any]:
        found = await find(box)
        return await execs.run_bounded(
            found, command, env=env, cwd=cwd, user=user, timeout=timeout, stdin=stdin, progress=ctx.report_progress
        )

    @server.tool()
    @_typed
    async def run_code(
        code: str, ctx: Context, box: str | None = None, image: str | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Run Python source with ``python3 -c``: in ``box`` if given, else in a fresh CodeBox
        (from ``image``, default BoxLite's Python image) removed afterwards. Same output limits
        and progress notifications as exec."""
        if len(code.encode()) > limits.MAX_CODE:
            raise ConfigError(f"code larger than {limits.MAX_CODE} bytes")
        command = ["python3", "-c", code]
        if box is not None:
            if image is not None:
                raise ConfigError("pass either box or image, not both")
            found = await find(box)
            return await execs.run_bounded(found, command, timeout=timeout, progress=ctx.report_progress)
        async with CodeBox(image=image, runtime=runtime()) as codebox:
            return await execs.run_bounded(codebox.box, command, timeout=timeout, progress=ctx.report_progress)

    @server.tool(description=WRITE_DOC)
    @_typed
    async def write_file(
        box: str, path: str, content: str | None = None, content_base64: str | None = None, mode: int = 0o644
    ) -> dict[str, Any]:
        if (content is None) == (content_base64 is None):
            raise ConfigError("pass exactly one of content and content_base64")
        if content is not None:
            data = content.encode()
        else:
            assert content_base64 is not None
            if len(content_base64) > limits.MAX_FILE * 2:
                raise ResourceExhaustedError(f"file larger than {limits.MAX_FILE} bytes")
            try:
                data = base64.b64decode(content_base64, validate=True)
            except (binascii.Error, ValueError):
                raise ConfigError("content_base64 is not valid base64") from None
        found = await find(box)
        written = await boxfiles.write_file(found, path, data, mode)
        return {"path": written, "size": len(data)}

    @server.tool(description=READ_DOC)
    @_typed
    async def read_file(box: str, path: str, binary: bool = False) -> dict[str, Any]:
        found = await find(box)
        data = await boxfiles.read_file(found, path)
        out: dict[str, Any] = {"path": boxfiles.box_path(path), "size": len(data)}
        if binary:
            out["content_base64"] = base64.b64encode(data).decode()
        else:
            out["content"] = data.decode("utf-8", "replace")
        return out

    @server.tool(description=LIST_DOC)
    @_typed
    async def list_files(box: str, path: str = "/") -> dict[str, Any]:
        found = await find(box)
        return await boxfiles.list_files(found, path)

    desktop_tools.register(server, runtime, find, _info, desktops)

    @server.resource("boxlite://boxes/{box}/logs", mime_type="text/plain", description=LOGS_DOC)
    async def box_logs(box: str) -> str:
        try:
            return await logs_tail(runtime(), await find(box))
        except BoxliteError as e:
            raise ResourceError(f"{type(e).__name__}: {e}") from None

    return server


async def logs_tail(rt: Boxlite, box: Box) -> str:
    """The last ``LOG_TAIL`` bytes of the box's main-process log (with its rotated part if short)."""
    return await box_log_tail(rt, box.id, limits.LOG_TAIL)
