"""One tunnel connection as an agent execution of the ``connect`` builtin (agent/tunnel.py).

``ExecTunnel.open`` waits (with a deadline) for the box's side to say it connected; then the
execution's stdout is the service's bytes and its stdin the caller's. Whatever the box writes on
stderr after that is read and dropped (its credit keeps flowing, nothing is kept).
"""

from __future__ import annotations

import asyncio
import contextlib

from ..aio import within
from ..errors import NetworkError
from .agent_client import ExecChannel

HANDSHAKE_TIMEOUT = 15.0
"""Seconds for the box's side to report the connection (it gives the service 10 s)."""
READY = b"connected\n"
MAX_ANSWER = 4096


class ExecTunnel:
    """The byte stream of one tunnel (a ``backends.base.TunnelStream``)."""

    def __init__(self, channel: ExecChannel) -> None:
        self.channel = channel
        self._drain = asyncio.ensure_future(self._drop_stderr())

    @classmethod
    async def open(cls, channel: ExecChannel, port: int, timeout: float = HANDSHAKE_TIMEOUT) -> ExecTunnel:
        try:
            await within(_handshake(channel, port), timeout)
        except BaseException as e:
            with contextlib.suppress(Exception):
                await channel.control({"op": "kill"})
            if isinstance(e, asyncio.TimeoutError):
                raise NetworkError(f"tunnel to port {port}: no answer within {timeout:g} s") from None
            raise
        return cls(channel)

    async def _drop_stderr(self) -> None:
        while await self.channel.stderr.read() is not None:
            pass

    async def read(self) -> bytes | None:
        """The service's next bytes; None at its end (or when the box's side is gone)."""
        return await self.channel.stdout.read()

    async def write(self, data: bytes) -> None:
        await self.channel.write_stdin(data)

    async def close_write(self) -> None:
        await self.channel.close_stdin()

    async def wait(self) -> None:
        """Until the box's side ended."""
        with contextlib.suppress(Exception):
            await self.channel.exit

    async def close(self) -> None:
        """End the box's side (if it still runs)."""
        self._drain.cancel()
        if not self.channel.exit.done():
            with contextlib.suppress(Exception):
                await self.channel.control({"op": "kill"})


async def _handshake(channel: ExecChannel, port: int) -> None:
    """The box's side says ``connected`` on stderr; anything else (at most a few KiB read) is why not."""
    said = b""
    while len(said) < len(READY) and len(said) < MAX_ANSWER:
        chunk = await channel.stderr.read()
        if chunk is None:
            break
        said += chunk
    if said.startswith(READY):
        return
    text = said[:200].decode(errors="replace").strip() or "the box ended the tunnel"
    raise NetworkError(f"tunnel to port {port}: {text}")


__all__ = ["HANDSHAKE_TIMEOUT", "READY", "ExecTunnel"]
