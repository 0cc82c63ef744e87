"""BoxLite's exec model: ``POST .../exec`` starts a command and answers its id; the command runs
on whether or not a client is attached. Its output waits (bounded) for an attach WebSocket, so a
client may detach and reattach; status, signal, resize and kill are plain requests.

Bounds: output not yet sent is held in ``QUEUE_CHUNKS`` chunks per stream, then the command's
pipe fills and it blocks (nothing grows with what the box writes); at most ``MAX_RUNNING`` live
executions per box; ended ones are kept for status queries, the oldest evicted past ``MAX_KEPT``.
A command no client has been attached to for ``ORPHAN_SECS`` gets SIGHUP (BoxLite's orphan policy).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import time
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Any

from ...aio import within
from ...api.execution import ExecStdin, ExecStream, Execution
from ...api.results import ExecStatus
from ...errors import BoxliteError, InvalidStateError, NotFoundError
from ...wire import STDERR, STDOUT

QUEUE_CHUNKS = 16
MAX_RUNNING = 32
MAX_KEPT = 256
ORPHAN_SECS = 300.0
SIGNALS = frozenset({1, 2, 3, 6, 10, 12, 15, 28})
"""What ``signal`` may send (HUP INT QUIT ABRT USR1 USR2 TERM WINCH); SIGKILL is ``DELETE``'s."""


class WireExec:
    """One execution: its output queues, its stdin, and its end once known."""

    def __init__(
        self, exec_id: str, box_id: str, execution: Execution, tty: bool, orphan_secs: float = ORPHAN_SECS
    ) -> None:
        self.id, self.box_id, self.ex, self.tty = exec_id, box_id, execution, tty
        self.started_at = datetime.now(timezone.utc)
        self._t0 = time.monotonic()
        self.ended_ms: int | None = None
        self.status: ExecStatus | None = None
        self.error: str | None = None
        self.killed = False
        self.attached = False
        self.idle_since = time.monotonic()
        self.stdin: ExecStdin = execution.stdin()
        self.stdin_closed = False
        self.queues: dict[int, asyncio.Queue[bytes | None]] = {
            STDOUT: asyncio.Queue(QUEUE_CHUNKS), STDERR: asyncio.Queue(QUEUE_CHUNKS),
        }  # fmt: skip
        self.pending: dict[int, bytes | None] = {STDOUT: b"", STDERR: b""}
        """A chunk taken from its queue and not yet known to be sent (resent on reattach)."""
        self.eof: set[int] = set()
        self._tasks = [
            asyncio.ensure_future(self._read(STDOUT, execution.stdout())),
            asyncio.ensure_future(self._read(STDERR, execution.stderr())),
        ]
        self.waiter = asyncio.ensure_future(self._wait())
        self._tasks.append(asyncio.ensure_future(self._reap(orphan_secs)))

    async def _read(self, kind: int, stream: ExecStream) -> None:
        try:
            async for chunk in stream.bytes():
                if chunk:
                    await self.queues[kind].put(chunk)
        except BoxliteError:
            pass
        await self.queues[kind].put(None)

    async def _wait(self) -> None:
        try:
            self.status = await self.ex.wait()
        except BoxliteError as e:
            self.error = str(e)
        self.ended_ms = int((time.monotonic() - self._t0) * 1000)

    async def _reap(self, idle: float) -> None:
        """SIGHUP the command once no client has been attached to it for ``idle`` seconds."""
        while self.running:
            left = idle if self.attached else self.idle_since + idle - time.monotonic()
            if left <= 0:
                with contextlib.suppress(BoxliteError):
                    await self.ex.signal(signal.SIGHUP)
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await within(asyncio.shield(self.waiter), left)

    def attach(self) -> None:
        self.attached = True

    def detach(self) -> None:
        self.attached = False
        self.idle_since = time.monotonic()

    @property
    def running(self) -> bool:
        return not self.waiter.done()

    def info(self) -> dict[str, Any]:
        """``ExecutionInfo``."""
        st = self.status
        if self.running:
            status = "running"
        elif st is not None and st.timed_out:
            status = "timed_out"
        elif self.killed or st is None or st.signal is not None:
            status = "killed"
        else:
            status = "completed"
        return {
            "execution_id": self.id,
            "status": status,
            "exit_code": None if st is None else st.exit_code,
            "started_at": self.started_at.isoformat(),
            "duration_ms": self.ended_ms,
            "error_message": self.error if st is None else st.error_message,
        }

    async def next_chunk(self, kind: int) -> bytes | None:
        """The next output chunk of a stream (None at its end); kept as pending until ``sent``."""
        if kind in self.eof:
            return None
        chunk = self.pending[kind] or await self.queues[kind].get()
        if chunk is None:
            self.eof.add(kind)
        self.pending[kind] = chunk
        return chunk

    def sent(self, kind: int) -> None:
        self.pending[kind] = b""

    async def close_stdin(self) -> None:
        if not self.stdin_closed:
            self.stdin_closed = True
            with contextlib.suppress(BoxliteError):
                await self.stdin.close()

    async def kill(self) -> None:
        self.killed = True
        if self.running:
            with contextlib.suppress(BoxliteError):
                await self.ex.kill()

    def discard(self) -> None:
        """Stop holding output (the record is gone; the command was killed or has ended)."""
        for task in self._tasks:
            task.cancel()


class Executions:
    """The executions of the server (its ids are unguessable; each belongs to one box)."""

    def __init__(self) -> None:
        self._all: OrderedDict[str, WireExec] = OrderedDict()

    def add(self, box_id: str, execution: Execution, tty: bool) -> WireExec:
        running = sum(1 for r in self._all.values() if r.box_id == box_id and r.running)
        if running >= MAX_RUNNING:
            raise InvalidStateError(f"box already runs {MAX_RUNNING} executions")
        rec = WireExec(f"exec-{secrets.token_hex(12)}", box_id, execution, tty)
        self._all[rec.id] = rec
        self._evict()
        return rec

    def _evict(self) -> None:
        ended = [r for r in self._all.values() if not r.running and not r.attached]
        for rec in ended[: max(0, len(ended) - MAX_KEPT)]:
            self.pop(rec.id)

    def get(self, box_id: str, exec_id: str) -> WireExec:
        rec = self._all.get(exec_id)
        if rec is None or rec.box_id != box_id:
            raise NotFoundError(f"execution not found: {exec_id[:80]}")
        return rec

    def pop(self, exec_id: str) -> None:
        rec = self._all.pop(exec_id, None)
        if rec is not None and not rec.attached:
            rec.discard()
