"""An output stream of a running command, as chunks in arrival order with credit on read."""

from __future__ import annotations

import asyncio
from collections import deque


class ChunkStream:
    """Bytes of one output stream, delivered in order. Reading a chunk calls ``_consumed``,
    which grants the producer that much more credit (agent or server flow control)."""

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._eof = False
        self._ready = asyncio.Event()
        self.total = 0

    def _feed(self, data: bytes) -> None:
        """Append a chunk; an empty one marks the end of the stream."""
        if data:
            self._chunks.append(data)
            self.total += len(data)
        else:
            self._eof = True
        self._ready.set()

    async def _consumed(self, amount: int) -> None:
        """Hook: ``amount`` bytes were handed to the reader."""

    async def read(self) -> bytes | None:
        """The next chunk, or None at end of stream."""
        while not self._chunks:
            if self._eof:
                return None
            self._ready.clear()
            await self._ready.wait()
        data = self._chunks.popleft()
        await self._consumed(len(data))
        return data

    async def read_all(self) -> bytes:
        parts = []
        while (chunk := await self.read()) is not None:
            parts.append(chunk)
        return b"".join(parts)

    @property
    def eof(self) -> bool:
        """The producer closed the stream (chunks may still be unread)."""
        return self._eof
