"""Host side of the start-up status pipe both engines read (format: ``agent.protocol.parse_status``)."""

from __future__ import annotations

import asyncio
import os

from ..agent import protocol as p


async def read_status(fd: int, state: dict[str, int]) -> p.StatusLine:
    """Read status lines from ``fd`` until a final one (``ready``/``template``/``error``) or EOF
    (word ``""``). The reported pid goes to ``state["pid"]`` at once, so a caller whose deadline
    passes can still kill the process. ``fd`` stays open (the caller owns it)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=p.STATUS_LINE_MAX)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(os.dup(fd), "rb", buffering=0)
    )
    try:
        while True:
            try:
                status = p.parse_status(await reader.readline())
            except ValueError:  # a line over the limit
                return p.StatusLine(p.STATUS_ERROR, "status line too long")
            if not status.word or status.word in p.STATUS_FINAL:
                return status
            if status.word == p.STATUS_PID:
                try:
                    state["pid"] = int(status.arg)
                except ValueError:
                    return p.StatusLine(p.STATUS_ERROR, f"bad status line: pid {status.arg[:80]}")
    finally:
        transport.close()
