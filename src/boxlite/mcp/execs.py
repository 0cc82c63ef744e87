"""A command run for an MCP client: bounded output, a deadline, output streamed as progress."""

from __future__ import annotations

import asyncio
import builtins
import codecs
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from ..aio import within
from ..api.box import Box
from ..api.execution import ExecStream, Execution
from ..api.results import ExecStatus
from ..errors import BoxliteError, ConfigError
from . import limits

log = logging.getLogger("boxlite.mcp")
Progress = Callable[[float, float | None, str], Awaitable[None]]
"""(bytes of output so far, total (None: unknown), text of a new slice of output): the
signature of the SDK's ``Context.report_progress``."""


def check_timeout(timeout: float | None) -> float:
    if timeout is None:
        return limits.DEFAULT_TIMEOUT
    if not 0 < timeout <= limits.MAX_TIMEOUT:
        raise ConfigError(f"timeout must be in (0, {limits.MAX_TIMEOUT:g}] seconds")
    return float(timeout)


def check_command(command: Sequence[str], env: Mapping[str, str] | None) -> None:
    if not command or not command[0]:
        raise ConfigError("the command is empty")
    if len(command) + len(env or {}) > limits.MAX_ARGS:
        raise ConfigError(f"more than {limits.MAX_ARGS} arguments and environment variables")


class _Capture:
    """What the result keeps of one stream: the first ``MAX_OUTPUT`` bytes."""

    def __init__(self) -> None:
        self.kept = bytearray()
        self.dropped = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def add(self, chunk: bytes) -> str:
        """Keep what fits; returns the kept part as text (for a progress notification)."""
        room = limits.MAX_OUTPUT - len(self.kept)
        part = chunk[: max(room, 0)]
        self.kept += part
        self.dropped += len(chunk) - len(part)
        return self._decoder.decode(part) if part else ""

    def text(self) -> str:
        return bytes(self.kept).decode("utf-8", "replace")


async def run_bounded(
    box: Box,
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    user: str | None = None,
    timeout: float | None = None,
    stdin: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run ``command`` to its end (or ``timeout``); returns exit status and capped output."""
    check_command(command, env)
    secs = check_timeout(timeout)
    if stdin is not None and len(stdin.encode()) > limits.MAX_FILE:
        raise ConfigError(f"stdin larger than {limits.MAX_FILE} bytes")
    execution = await box.exec(
        command[0], list(command[1:]), env=dict(env) if env else None, user=user, timeout_secs=secs, cwd=cwd,
        stdin=stdin is not None,
    )  # fmt: skip
    out, err = _Capture(), _Capture()
    sent = [0]

    async def pump(stream: ExecStream, capture: _Capture, prefix: str) -> None:
        async for chunk in stream.bytes():
            text = capture.add(chunk)
            sent[0] += len(chunk)
            if text and progress is not None:
                for i in range(0, len(text), limits.PROGRESS_CHUNK):
                    with contextlib.suppress(Exception):  # a client gone away must not fail the command
                        await progress(sent[0], None, prefix + text[i : i + limits.PROGRESS_CHUNK])

    async def feed() -> None:
        if stdin is not None:
            pipe = execution.stdin()
            with contextlib.suppress(BoxliteError):
                await pipe.send_input(stdin.encode())
                await pipe.close()

    status: ExecStatus | None = None
    try:
        await within(
            asyncio.gather(feed(), pump(execution.stdout(), out, ""), pump(execution.stderr(), err, "[stderr] ")),
            secs + limits.KILL_GRACE,
        )
        status = await within(execution.wait(), limits.KILL_GRACE)
    except builtins.TimeoutError:  # the box did not end the command at its deadline: the server does
        await _kill(execution)
    except BaseException:  # cancelled (the client gave up): never leave the command running
        await _kill(execution)
        raise
    result: dict[str, Any] = {
        "exit_code": -1 if status is None else status.exit_code,
        "stdout": out.text(),
        "stderr": err.text(),
        "stdout_truncated_bytes": out.dropped,
        "stderr_truncated_bytes": err.dropped,
        "timed_out": True if status is None else status.timed_out,
    }
    if status is None:
        result["error_message"] = f"killed after {secs:g}s (timeout)"
    elif status.error_message:
        result["error_message"] = status.error_message
    return result


async def _kill(execution: Execution) -> None:
    with contextlib.suppress(BoxliteError):
        await execution.kill()
