"""An agent socket whose side of the protocol a test scripts: each frame the client sends goes to
``on_frame``, which may answer anything (or nothing) through the writer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path

from boxlite.agent import protocol as p

OnFrame = Callable[[asyncio.StreamWriter, int, int, bytes], Awaitable[None]]


async def scripted_agent(path: Path, on_frame: OnFrame) -> asyncio.Server:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames = p.FrameReader()
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                frames.feed(data)
                for kind, channel, payload in frames:
                    await on_frame(writer, kind, channel, payload)

    return await asyncio.start_unix_server(serve, path=str(path))
