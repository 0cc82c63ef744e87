"""One execution on a node service, behind the standard ``ExecChannel`` (driver side).

Each output stream is a Ray streaming generator the driver pumps into a ``ChunkStream``; the
pump stops before more than ``WINDOW`` bytes would wait unread, so a slow reader holds the node's
generator (Ray's backpressure window), which holds the box's agent (its credit): no queue on the
way grows without bound. A watchdog pings the node while the command runs: a node that stops
answering fails the execution with ``BoxDiedError`` naming it instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from ...agent.protocol import DEFAULT_OUTPUT_WINDOW
from ...client.streams import ChunkStream
from ...errors import BoxDiedError, BoxliteError
from .node import CHUNK

if TYPE_CHECKING:
    from .backend import NodeRef

WINDOW = DEFAULT_OUTPUT_WINDOW
"""Unread output bytes buffered per stream on the driver at most (the local agent's window)."""
STREAM_BACKPRESSURE = 4
"""Chunks a node service's generator may run ahead of the driver."""


class RayOutput(ChunkStream):
    """One output stream; reading makes room for the pump."""

    def __init__(self) -> None:
        super().__init__()
        self.buffered = 0
        self.room = asyncio.Event()
        self.room.set()

    async def _consumed(self, amount: int) -> None:
        self.buffered -= amount
        self.room.set()


class RayChannel:
    """Driver end of an execution running on ``node``."""

    def __init__(self, node: NodeRef, exec_id: str, pid: int) -> None:
        self.node, self.exec_id, self.pid = node, exec_id, pid
        self.stdout, self.stderr = RayOutput(), RayOutput()
        self.exit: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._stdin_closed = False
        self._tasks = [
            asyncio.ensure_future(self._pump("stdout", self.stdout)),
            asyncio.ensure_future(self._pump("stderr", self.stderr)),
            asyncio.ensure_future(self._wait()),
        ]

    async def _pump(self, name: str, out: RayOutput) -> None:
        handle = self.node.handle
        try:
            gen = handle.exec_read.options(
                num_returns="streaming", _generator_backpressure_num_objects=STREAM_BACKPRESSURE
            ).remote(self.exec_id, name)
            async for ref in gen:
                data = self.node.unwrap(await ref)
                while out.buffered and out.buffered + len(data) > WINDOW:  # unread output stays <= WINDOW
                    out.room.clear()
                    await out.room.wait()
                out._feed(data)
                out.buffered += len(data)
        except BoxliteError:
            pass
        except Exception as e:  # the node (or its actor) is gone
            self._fail(self.node.died(e))
        finally:
            if not out.eof:
                out._feed(b"")

    async def _wait(self) -> None:
        ref = self.node.handle.exec_wait.remote(self.exec_id)
        fut = asyncio.wrap_future(ref.future())
        try:
            while True:
                done, _ = await asyncio.wait({fut}, timeout=self.node.ping_interval)
                if done:
                    break
                await self.node.ping()  # raises BoxDiedError when the node stopped answering
            body = self.node.unwrap(fut.result())
            if not self.exit.done():
                self.exit.set_result(body)
        except BaseException as e:
            fut.cancel()
            self._fail(e if isinstance(e, BoxliteError) else self.node.died(e))
            for out in (self.stdout, self.stderr):
                if not out.eof:
                    out._feed(b"")

    def _fail(self, exc: BaseException) -> None:
        if not self.exit.done():
            self.exit.set_exception(exc)
            self.exit.exception()  # retrieved here: Execution.wait() handles it

    async def write_stdin(self, data: bytes) -> None:
        for i in range(0, len(data), CHUNK):
            await self.node.call_raw("exec_stdin", self.exec_id, bytes(data[i : i + CHUNK]))

    async def close_stdin(self) -> None:
        if not self._stdin_closed:
            self._stdin_closed = True
            await self.node.call_raw("exec_close_stdin", self.exec_id)

    @property
    def stdin_closed(self) -> bool:
        return self._stdin_closed

    async def control(self, body: dict[str, Any]) -> None:
        if not self.exit.done():
            with contextlib.suppress(BoxDiedError):
                await self.node.call_raw("exec_control", self.exec_id, dict(body))
