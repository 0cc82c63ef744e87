"""One execution on a node service, behind the standard ``ExecChannel`` (driver side).

One actor call (``NodeService.exec_begin``) starts the command and waits a little (``exec_wait``)
for its end: a short command's output and exit come with the answer, so it costs one Ray round
trip. A longer one continues in a Ray streaming generator (``exec_follow``): batches of output,
end-of-stream and exit events, pushed by the node as they happen (no polling).
Flow control is per stream, as in the local protocol: the node reads a stream of the box only
while the driver's reader is less than ``WINDOW`` bytes behind (what the reader takes is given
back with ``exec_credit``), so a slow reader holds the box's agent, and the driver never stops
taking events (an unread stream does not hold the other stream or the exit). A watchdog pings
the node while nothing arrives and someone could be waiting (the exit is not known yet, or a
reader waits for output): a node that stops answering fails the execution with ``BoxDiedError``
naming it instead of hanging. Once the exit is known and no reader waits, it stops pinging until
one does (a killed command whose output is never read would otherwise ping its node for as long
as the runtime lives).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from ...client.streams import ChunkStream
from ...errors import BoxDiedError, BoxliteError
from ...wire import decode_error
from .node import CHUNK, WINDOW

if TYPE_CHECKING:
    from .backend import NodeRef

STREAM_BACKPRESSURE = 4
"""Items a node service's generator may run ahead of the driver."""
CREDIT_BATCH = WINDOW // 4
"""Bytes read on the driver before they are given back to the node in one call."""


class RayOutput(ChunkStream):
    """One output stream; what its reader takes goes back to the node as credit."""

    def __init__(self, channel: RayChannel, name: str) -> None:
        super().__init__()
        self._channel, self._name, self._owed = channel, name, 0
        self.waiting = 0  # readers waiting for output that has not come yet

    async def read(self) -> bytes | None:
        if self._chunks or self._eof:
            return await super().read()
        self.waiting += 1
        self._channel.reader_arrived.set()  # the watchdog pings again while it waits
        try:
            return await super().read()
        finally:
            self.waiting -= 1

    async def _consumed(self, amount: int) -> None:
        self._owed += amount
        if self._owed >= CREDIT_BATCH and not self._eof:  # after its end the node reads no more of it
            owed, self._owed = self._owed, 0
            self._channel.credit(self._name, owed)


class RayChannel:
    """Driver end of an execution on ``node``."""

    def __init__(self, node: NodeRef, exec_id: str, box_id: str, request: Any, wait: float, create: Any = None) -> None:
        self.node, self.exec_id, self.pid = node, exec_id, 0
        self.create = create  # (options, max_boxes): the box is created on the node by this command
        self.created: Any = None  # then its info, once the node made it
        self.create_failed = False  # the node did not make it (the error raised is why)
        self.stdout, self.stderr = RayOutput(self, "stdout"), RayOutput(self, "stderr")
        self.exit: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._stdin_closed = False
        self._begin = (box_id, request, wait)
        self._run: Any = None  # the exec_follow generator, for a command that outlived exec_begin
        self._step: asyncio.Future[Any] | None = None
        self._tasks: list[asyncio.Future[Any]] = []
        self.reader_arrived = asyncio.Event()

    async def start(self, timeout: float) -> None:
        """Wait until the command runs (``timeout``: the box may have to start first), and up to
        ``wait`` more for its end."""
        box_id, request, wait = self._begin
        try:
            extra = () if self.create is None else (self.create,)
            began = await self.node.call_raw(
                "exec_begin", self.exec_id, box_id, request, wait, *extra, timeout=timeout + wait
            )
            if "create_error" in began:
                self.create_failed = True
                raise decode_error(began["create_error"])
            self.created = began.get("created")
            self.pid = int(began["pid"])
            self._apply(began["events"])
        except BaseException as e:
            self._end(e if isinstance(e, (BoxliteError, asyncio.CancelledError)) else self.node.died(e))
            raise
        if began["done"]:
            self._end(BoxDiedError(f"execution {self.exec_id} on Ray node {self.node.node_id} ended, no status"))
        else:
            self._run = self.node.stream("exec_follow", self.exec_id)
            self._tasks.append(asyncio.ensure_future(self._events()))

    def _apply(self, batch: list[Any]) -> None:
        for event in batch:
            if event[0] == "out":
                (self.stdout if event[1] == "stdout" else self.stderr)._feed(bytes(event[2]))
            elif event[0] == "eof":
                (self.stdout if event[1] == "stdout" else self.stderr)._feed(b"")
            elif event[0] == "exit" and not self.exit.done():
                self.exit.set_result(event[1])
            elif event[0] == "exit_err":
                self._fail(decode_error(event[1]))

    async def _next(self) -> Any:
        """The next item of ``exec_follow`` (None at its end), pinging the node while none comes and
        someone waits (the pending step survives the pings: Ray's generator is not re-entrant)."""
        while True:
            self._step = self._step or asyncio.ensure_future(self._run.__anext__())
            self.reader_arrived.clear()
            if self._watched():
                done, _ = await asyncio.wait({self._step}, timeout=self.node.ping_interval)
                if done:
                    break
                await self.node.ping()  # raises BoxDiedError when the node stopped answering
                continue
            arrived = asyncio.ensure_future(self.reader_arrived.wait())
            try:
                done, _ = await asyncio.wait({self._step, arrived}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                arrived.cancel()
            if self._step in done:
                break
        taken, self._step = self._step, None
        try:
            ref = taken.result()
        except StopAsyncIteration:
            return None
        except BoxliteError:
            raise
        except Exception as e:
            raise self.node.died(e) from None
        return await self.node._await(ref, None)

    def _watched(self) -> bool:
        """Would anyone notice a lost node: a wait for the exit, or a reader waiting for output?"""
        return not self.exit.done() or self.stdout.waiting > 0 or self.stderr.waiting > 0

    async def _events(self) -> None:
        try:
            while (batch := await self._next()) is not None:
                self._apply(batch)
            self._end(BoxDiedError(f"execution {self.exec_id} on Ray node {self.node.node_id} ended, no status"))
        except BaseException as e:
            self._end(e if isinstance(e, BoxliteError) else self.node.died(e))
            if isinstance(e, asyncio.CancelledError):
                raise

    def _end(self, exc: BaseException) -> None:
        """No more events: fail the exit (unless known) and end both streams."""
        if self._step is not None:
            self._step.cancel()
        self._fail(exc)
        for out in (self.stdout, self.stderr):
            if not out.eof:
                out._feed(b"")

    def _fail(self, exc: BaseException) -> None:
        if not self.exit.done():
            self.exit.set_exception(exc)
            self.exit.exception()  # retrieved here: Execution.wait() handles it

    def credit(self, stream: str, amount: int) -> None:
        """Give ``amount`` bytes of ``stream`` back to the node (in the background: a reader never waits)."""
        task = asyncio.ensure_future(self._credit(stream, amount))
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    async def _credit(self, stream: str, amount: int) -> None:
        with contextlib.suppress(BoxliteError):  # a lost node ends the execution through _events
            await self.node.call_raw("exec_credit", self.exec_id, stream, amount)

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
