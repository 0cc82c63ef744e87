"""Stdin within a credit window: the one writer behind both the agent's and the REST server's
exec channels. The receiver grants credit as it consumes; the writer never sends beyond it, so
what the receiver buffers for one execution stays within its window."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ..errors import InvalidStateError


class StdinWindow:
    """Sends stdin in chunks of at most ``max_chunk`` bytes, only within the credit granted."""

    def __init__(self, credit: int, max_chunk: int) -> None:
        self.credit = credit
        self.max_chunk = max_chunk
        self.closed = False
        self._ready = asyncio.Event()

    def grant(self, amount: int) -> None:
        """The receiver consumed ``amount`` bytes: that much more may be sent."""
        self.credit += amount
        self._ready.set()

    def wake(self) -> None:
        """The execution ended or the connection dropped: a writer waiting for credit returns."""
        self._ready.set()

    def close(self) -> bool:
        """Mark stdin closed; True the first time (the caller then tells the receiver)."""
        first = not self.closed
        self.closed = True
        return first

    async def write(self, data: bytes, send: Callable[[bytes], Awaitable[None]], ended: Callable[[], bool]) -> bool:
        """Send ``data`` through ``send`` chunk by chunk. Returns False early (dropping the rest)
        once ``ended()`` says nobody will read it any more, True when all of it was sent."""
        if self.closed:
            raise InvalidStateError("stdin is closed")
        view = memoryview(data)
        while view:
            while self.credit <= 0:
                if ended():
                    return False
                self._ready.clear()
                await self._ready.wait()
            n = min(len(view), self.credit, self.max_chunk)
            self.credit -= n
            await send(bytes(view[:n]))
            view = view[n:]
        return True
