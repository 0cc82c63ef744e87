"""Wait for a server inside a box to answer on a published host port."""

from __future__ import annotations

import asyncio
import socket


async def first_reply(port: int, attempts: int = 200, interval: float = 0.05) -> bytes:
    """The first bytes a connection to ``127.0.0.1:port`` receives, retried while the box's server
    is not listening yet (connection refused, reset, or closed without a byte); ``b""`` if it never answers."""
    for _ in range(attempts):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
                reply = conn.recv(100)
            if reply:
                return reply
        except OSError:
            pass
        await asyncio.sleep(interval)
    return b""
