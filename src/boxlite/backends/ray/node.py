"""The node service: a Ray actor on one node, owning that node's local runtime.

Every method answers an envelope, ``("ok", value)`` or ``("err", encoded BoxliteError)``, so the
driver rebuilds the same typed errors as a local runtime (Ray's own exception wrapping would
turn them into ``RayTaskError``). A short command is one call (``exec_begin`` answers with its
output and exit); the output of a longer one and copy-out streams are Ray streaming generators:
the driver asks for them with a small backpressure window, and output is read here only within
the driver's credit, so nothing between the box and the driver buffers more than a window.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import socket
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from ...agent.protocol import CHUNK as AGENT_CHUNK
from ...agent.protocol import DEFAULT_OUTPUT_WINDOW
from ...aio import within
from ...api.options import Options
from ...errors import BoxliteError, NotFoundError, RequestTooLargeError, ResourceExhaustedError
from ...wire import encode_error
from ..base import ExecChannel, ExecCounters, ExecRequest
from ..local import LocalBackend
from . import directory

Envelope = tuple[str, Any]

MAX_EXECS = 1024
"""Live executions one node service tracks (a driver that never waits for its commands cannot
grow the table without bound)."""
MAX_UPLOADS = 64
"""Concurrent copy_in transfers per node service."""
CHUNK = 256 * 1024
"""Largest chunk a stream item or a copy_in call carries."""
WINDOW = DEFAULT_OUTPUT_WINDOW
"""Bytes of one output stream that may wait unread on the driver (the local agent's window)."""
MAX_TRANSFER_BYTES = 16 << 30
"""Ceiling of the per-call transfer limit a driver asks for (``RayOptions.max_transfer_bytes``)."""
UPLOAD_IDLE_SECS = 300.0
"""An upload no chunk arrived for in this long is aborted (its driver is gone)."""
FINISHED_KEEP_SECS = 60.0
"""How long an ended execution stays readable before it is purged."""
MAX_BEGIN_WAIT = 1.0
"""Ceiling of the wait a driver asks ``exec_begin`` for (``RayOptions.exec_wait``)."""
BEGIN_BYTES = 64 * 1024
"""Output ``exec_begin`` answers with at most (the rest streams): its answer stays small enough for
Ray to carry inline, without the object store."""
FOLLOW_CLAIM_SECS = 60.0
"""An execution ``exec_begin`` answered before its end and no ``exec_follow`` came for in this long is
killed (its driver is gone)."""
_IDLE_STATES = ("stopped", "exited")


def pack(value: Any) -> bytes:
    """Arguments or an answer as one stdlib pickle. Ray carries ``bytes`` as they are, where it would
    run cloudpickle over dataclasses such as ``BoxOptions`` and ``BoxInfo`` (a Python hook for every
    object: ~1 ms of CPU a call on the two sides). Same trust as Ray's own pickling: drivers and
    node services of one cluster trust each other (docs/security.md)."""
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _ok(value: Any = None) -> Envelope:
    return ("ok", value)


def _err(exc: BaseException) -> Envelope:
    return ("err", {"error": encode_error(exc)})


@dataclass
class _Exec:
    channel: ExecChannel
    box_id: str
    ended_at: float | None = None
    credit: dict[str, int] = field(default_factory=lambda: {"stdout": WINDOW, "stderr": WINDOW})
    room: asyncio.Event = field(default_factory=asyncio.Event)  # set when a stream got credit back
    events: asyncio.Queue[tuple[Any, ...]] = field(default_factory=asyncio.Queue)  # for the driver
    pending: asyncio.Event = field(default_factory=asyncio.Event)  # set when events were queued
    tasks: list[asyncio.Future[Any]] = field(default_factory=list)  # the pumps and the exit's waiter
    left: int = 3  # ends (of stdout, of stderr, the exit) not handed to the driver yet
    followed: bool = False


ABORT_GRACE_SECS = 10.0
"""How long an aborted upload's box side may take to stop (its untar is killed) before the abort
answers anyway."""


class _Aborted:
    """Queue marker of an aborted upload."""


_ABORTED = _Aborted()


@dataclass
class _Upload:
    queue: asyncio.Queue[bytes | _Aborted | None]
    task: asyncio.Task[None]
    limit: int
    received: int = 0
    touched: float = field(default_factory=time.monotonic)


class NodeService:
    """One node's BoxLite runtime, reachable from any driver of the cluster by its actor name."""

    def __init__(self, node_id: str, home_dir: str | None, engine: str | None) -> None:
        self.node_id = node_id
        self._home_dir = home_dir.replace("{node_id}", node_id) if home_dir else None
        self._engine = engine
        self._backend: LocalBackend | None = None
        self._execs: dict[str, _Exec] = {}
        self._uploads: dict[str, _Upload] = {}
        self._creating = 0  # creations in flight (they count against the per-node box limit)
        self._busy_boxes: dict[str, Any] | None = None  # box id -> BoxInfo of the boxes not idle (a cache)
        self._busy_at = 0.0
        self._changed: dict[str, Any] = {}  # box id -> BoxInfo, or None: removed; not yet in the directory
        self._full_sync = True
        self._sync_wanted: asyncio.Event | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self._synced: asyncio.Event | None = None  # set once the first whole list was sent (or failed)
        self._working = 0  # creates, box calls and exec begins in flight (the directory waits for a pause)
        self._quiet = asyncio.Event()
        self._quiet.set()

    @property
    def local(self) -> LocalBackend:
        if self._backend is None or self._backend.closed:
            self._backend = LocalBackend(Options(home_dir=self._home_dir, engine=self._engine))
        return self._backend

    # --- node -------------------------------------------------------------------------------
    async def hello(self) -> Envelope:
        """Who this is and its load: boxes not stopped, with their cpus and memory."""
        try:
            self._start_sync()
            assert self._synced is not None
            with contextlib.suppress(asyncio.TimeoutError):  # a node on a home it takes over: entries replaced
                await within(self._synced.wait(), SYNC_TIMEOUT)
            busy = await self._busy()
            return _ok({
                "node_id": self.node_id, "home": str(self.local.home.root), "pid": os.getpid(),
                "boxes": len(busy) + self._creating, "cpus": sum(float(i.cpus or 0) for i in busy),
                "memory_mib": sum(int(i.memory_mib or 0) for i in busy),
            })  # fmt: skip
        except BaseException as e:
            return _err(e)

    async def packed(self, method: str, blob: bytes) -> bytes:
        """``method(*args)`` with its arguments and answer packed (:func:`pack`): the route of the
        driver's frequent calls whose arguments or answers hold dataclasses."""
        if method not in PACKED or not isinstance(blob, bytes):
            return pack(_err(BoxliteError(f"node service has no packed method {method!r}")))
        try:
            args = pickle.loads(blob)
        except Exception as e:
            return pack(_err(BoxliteError(f"unreadable arguments for {method!r}: {type(e).__name__}")))
        if not isinstance(args, tuple):
            return pack(_err(BoxliteError(f"arguments for {method!r} must be a tuple")))
        return pack(await getattr(self, method)(*args))

    async def ping(self) -> Envelope:
        """Liveness only (drivers waiting on a command ask this every few seconds)."""
        return _ok(self.node_id)

    async def _busy(self, max_age: float | None = None) -> list[Any]:
        """The boxes not idle, listed at most every ``max_age`` seconds (default ``BUSY_TTL``; a list
        costs ~0.2 ms a box); what this service creates or wakes is counted at once, so an old view
        overcounts boxes that stopped on their own and misses only boxes another process on the
        same home started."""
        max_age = BUSY_TTL if max_age is None else max_age
        if self._busy_boxes is None or time.monotonic() - self._busy_at > max_age:
            at = time.monotonic()
            busy = {i.id: i for i in await self.local.list() if i.state.status not in _IDLE_STATES}
            self._busy_boxes, self._busy_at = busy, at
        return list(self._busy_boxes.values())

    def _may_wake(self, box_id: Any) -> None:
        """After a call that may have turned an idle box busy: the next count lists again (unless
        the box was counted busy already)."""
        if self._busy_boxes is None or not isinstance(box_id, str) or box_id not in self._busy_boxes:
            self._busy_boxes = None

    @contextlib.contextmanager
    def _work(self) -> Iterator[None]:
        """A call in flight: directory updates wait for a pause (at most ``SYNC_BATCH_SECS``)."""
        self._working += 1
        self._quiet.clear()
        try:
            yield
        finally:
            self._working -= 1
            if not self._working:
                self._quiet.set()

    async def create(self, options: Any, name: str | None, max_boxes: int, box_id: str | None = None) -> Envelope:
        """A new box, unless this node already has ``max_boxes`` (counting creations in flight):
        the node is the authority on its limit, whatever the drivers' views of its load.
        ``box_id``: the id a driver gave a box it placed here before creating it."""
        with self._work():
            return await self._create_counted(options, name, max_boxes, box_id)

    async def _create_counted(self, options: Any, name: str | None, max_boxes: int, box_id: str | None) -> Envelope:
        self._start_sync()
        self._creating += 1  # taken before the first await: concurrent creates see each other
        try:
            return await self._create(options, name, max_boxes, box_id)
        finally:
            self._creating -= 1

    async def _create(self, options: Any, name: str | None, max_boxes: int, box_id: str | None) -> Envelope:
        try:
            # An older view (it overcounts boxes that stopped on their own): listed again to confirm a refusal.
            if len(await self._busy(LIMIT_VIEW_TTL)) + self._creating > max_boxes and (
                len(await self._busy(0.0)) + self._creating > max_boxes
            ):
                raise ResourceExhaustedError(f"node {self.node_id} has {max_boxes} boxes already")
            info = await self.local.create(options, name, box_id if isinstance(box_id, str) else None)
            if self._busy_boxes is not None and info.state.status not in _IDLE_STATES:
                self._busy_boxes[info.id] = info
            self._changed[info.id] = info
            self._want_sync()
            return _ok(info)
        except BaseException as e:
            return _err(e)

    # --- the cluster's directory (directory.py) -----------------------------------------------
    def _start_sync(self) -> None:
        if self._sync_task is None or self._sync_task.done():
            self._sync_wanted, self._synced, self._full_sync = asyncio.Event(), asyncio.Event(), True
            self._sync_wanted.set()
            self._sync_task = asyncio.ensure_future(self._sync_loop())

    def _want_sync(self, full: bool = False) -> None:
        self._full_sync = self._full_sync or full
        if self._sync_wanted is not None:
            self._sync_wanted.set()

    async def _sync_loop(self) -> None:
        """Send changes as they happen (coalesced), the whole list every ``FULL_SYNC_SECS``."""
        import ray

        handle: Any = None
        assert self._sync_wanted is not None
        while True:
            try:
                await within(self._sync_wanted.wait(), directory.FULL_SYNC_SECS)
                timed_out = False
            except asyncio.TimeoutError:
                timed_out = True
            if not timed_out and self._working:  # changes come in bursts (creations): one update for a burst
                with contextlib.suppress(asyncio.TimeoutError):
                    await within(self._quiet.wait(), SYNC_BATCH_SECS)
            self._sync_wanted.clear()
            full, changed = self._full_sync or timed_out, self._changed
            self._full_sync, self._changed = False, {}
            try:
                if handle is None:
                    handle = directory.open_directory(ray, ray.get_runtime_context().namespace)
                if full:
                    home = f"{socket.gethostname()}:{self.local.home.root}"
                    ref = handle.replace.remote(self.node_id, home, pack(await self.local.list()))
                else:
                    infos = [i for i in changed.values() if i is not None]
                    ref = handle.update.remote(self.node_id, pack(infos), [b for b, i in changed.items() if i is None])
                await within(asyncio.wrap_future(ref.future()), SYNC_TIMEOUT)
            except Exception:  # the directory is a hint: try again with the whole list
                handle, self._full_sync = None, True
                await asyncio.sleep(1.0)
            finally:
                if full:
                    assert self._synced is not None
                    self._synced.set()

    async def call(self, method: str, *args: Any) -> Envelope:
        """A box or runtime method of the local backend (a fixed set: nothing else is reachable)."""
        if method not in _CALLS:
            return _err(BoxliteError(f"node service has no method {method!r}"))
        self._start_sync()
        with self._work():
            return await self._call(method, *args)

    async def _call(self, method: str, *args: Any) -> Envelope:
        try:
            if method == "metrics":
                return _ok(await self.local.metrics(ExecCounters()))
            if method == "box_metrics":
                return _ok(await self.local.box_metrics(args[0], ExecCounters()))
            if method == "info":
                return _ok(self.local.info(*args))
            if method == "image":
                return _ok(await getattr(self.local.images, args[0])(*args[1:]))
            return _ok(await getattr(self.local, method)(*args))
        except BaseException as e:
            return _err(e)
        finally:
            if method in _CHANGES:
                self._want_sync(full=True)  # also when it failed: whatever it changed is in the list
                self._busy_boxes = None
            elif method in ("ready", "snapshot_restore"):
                self._may_wake(args[0] if args else None)

    # --- exec -------------------------------------------------------------------------------
    async def exec_begin(
        self, exec_id: str, box_id: str, request: ExecRequest, wait: float, create: Any = None
    ) -> Envelope:
        """Start a command, then wait up to ``wait`` seconds for it to end: ``{"pid", "events",
        "done"}``. A command that ends within it costs the driver this one call (its output and exit
        are in ``events``); a longer one's events so far are there, the rest come from
        ``exec_follow``. ``wait`` bounds how late the first output of a longer command is.

        ``create``: ``(options, max_boxes)`` of a box the driver placed here without creating it
        yet (its first command creates it under ``box_id``, as ``create`` would): the answer then
        also holds ``"created"`` (its info), or only ``"create_error"`` when the node refused it.

        Events: ``("out", stream, bytes)``, ``("eof", stream)``, ``("exit", body)`` or
        ``("exit_err", error)``. Flow control per stream, as the local protocol: each stream may be
        ``WINDOW`` bytes ahead of the driver's reader (``exec_credit`` gives back what it read); a
        stream without credit is not read here, so its box's agent holds the command. The driver
        never stops taking events, so one stream nobody reads does not hold the other or the exit."""
        with self._work():
            created: Any = None
            if create is not None:
                options, max_boxes = create
                made = await self._create_counted(options, None, max_boxes, box_id)
                if made[0] != "ok":
                    return _ok({"create_error": made[1]})
                created = made[1]
            began = await self._exec_begin(exec_id, box_id, request, wait)
            if created is not None and began[0] == "ok":
                began[1]["created"] = created
            return began

    async def _exec_begin(self, exec_id: str, box_id: str, request: ExecRequest, wait: float) -> Envelope:
        started = await self.exec_start(box_id, request, exec_id)
        if started[0] != "ok":
            return started
        entry = self._execs[exec_id]
        entry.tasks = [asyncio.ensure_future(c) for c in (self._pump(entry, "stdout"), self._pump(entry, "stderr"),
                                                          self._wait_exit(entry))]  # fmt: skip
        loop = asyncio.get_running_loop()
        until = loop.time() + (min(max(0.0, float(wait)), MAX_BEGIN_WAIT) if isinstance(wait, (int, float)) else 0.0)
        batch: list[tuple[Any, ...]] = []
        size = 0
        while entry.left and size < BEGIN_BYTES:
            if entry.events.empty():
                entry.pending.clear()
                try:
                    await within(entry.pending.wait(), until - loop.time())
                except asyncio.TimeoutError:
                    break
            size = self._take(entry, batch, size, BEGIN_BYTES)
        if entry.left:
            loop.call_later(FOLLOW_CLAIM_SECS, self._unclaimed, exec_id)
        else:
            self._stop_pumps(entry)
        return _ok({**started[1], "events": batch, "done": not entry.left})

    async def exec_follow(self, exec_id: str) -> AsyncGenerator[Envelope, None]:
        """The rest of an execution ``exec_begin`` answered before its end (a streaming generator):
        batches of events, pushed as they happen, until both streams ended and the exit is known."""
        entry = self._execs.get(exec_id)
        if entry is None or entry.followed:
            yield _err(NotFoundError(f"no execution {exec_id} to follow on node {self.node_id}"))
            return
        entry.followed = True
        try:
            while entry.left:
                batch: list[tuple[Any, ...]] = []
                while entry.events.empty():
                    entry.pending.clear()
                    await entry.pending.wait()
                await asyncio.sleep(0)  # events ready at the same moment (both ends, the exit) share an item
                self._take(entry, batch, 0, CHUNK)
                yield _ok(batch)
        finally:
            self._stop_pumps(entry)

    @staticmethod
    def _take(entry: _Exec, batch: list[tuple[Any, ...]], size: int, limit: int) -> int:
        """Move the ready events into ``batch`` while it holds less than ``limit`` bytes of output."""
        while not entry.events.empty() and size < limit:
            event = entry.events.get_nowait()
            batch.append(event)
            if event[0] == "out":
                size += len(event[2])
            else:
                entry.left -= 1
        return size

    @staticmethod
    def _put(entry: _Exec, event: tuple[Any, ...]) -> None:
        entry.events.put_nowait(event)  # bounded by the credit: <= 2 windows of output, 3 ends
        entry.pending.set()

    async def _pump(self, entry: _Exec, name: str) -> None:
        source = entry.channel.stdout if name == "stdout" else entry.channel.stderr
        try:
            while True:
                while entry.credit[name] < AGENT_CHUNK:
                    entry.room.clear()
                    await entry.room.wait()
                chunk = await source.read()
                if chunk is None:
                    break
                entry.credit[name] -= len(chunk)
                self._put(entry, ("out", name, chunk))
        finally:
            self._put(entry, ("eof", name))

    async def _wait_exit(self, entry: _Exec) -> None:
        try:
            self._put(entry, ("exit", await asyncio.shield(entry.channel.exit)))
        except BaseException as e:
            self._put(entry, ("exit_err", {"error": encode_error(e)}))

    @staticmethod
    def _stop_pumps(entry: _Exec) -> None:
        for task in entry.tasks:
            task.cancel()

    def _unclaimed(self, exec_id: str) -> None:
        """An execution whose driver never came for the rest (it died after ``exec_begin``): nobody
        can read its output or write its stdin any more, so it is killed, not left holding the box."""
        entry = self._execs.get(exec_id)
        if entry is None or entry.followed:
            return
        self._stop_pumps(entry)
        entry.tasks = (
            [] if entry.ended_at is not None else [asyncio.ensure_future(self.exec_control(exec_id, {"op": "kill"}))]
        )

    async def exec_credit(self, exec_id: str, stream: str, amount: int) -> Envelope:
        """The driver's reader took ``amount`` bytes of ``stream``: that much more may be read."""
        entry = self._execs.get(exec_id)
        if entry is not None and stream in entry.credit:
            entry.credit[stream] = min(entry.credit[stream] + max(0, int(amount)), WINDOW)
            entry.room.set()
        return _ok()

    async def exec_start(self, box_id: str, request: ExecRequest, exec_id: str) -> Envelope:
        self._purge()
        if self._live_execs() >= MAX_EXECS:
            return _err(ResourceExhaustedError(f"node {self.node_id} tracks {MAX_EXECS} executions already"))
        if exec_id in self._execs:
            return _err(BoxliteError(f"execution {exec_id} exists on node {self.node_id}"))
        try:
            started = await self.local.exec(box_id, request)
        except BaseException as e:
            return _err(e)
        finally:
            self._may_wake(box_id)  # an exec starts a stopped box
        entry = _Exec(started.channel, box_id)
        started.channel.exit.add_done_callback(lambda _f: setattr(entry, "ended_at", time.monotonic()))
        self._execs[exec_id] = entry
        return _ok({"exec_id": exec_id, "pid": started.channel.pid})

    def _purge(self) -> None:
        """Drop ended executions whose output was read after ``FINISHED_KEEP_SECS``, sooner (oldest
        first) beyond ``MAX_EXECS``."""
        now = time.monotonic()
        ended = sorted((e.ended_at, k) for k, e in self._execs.items() if e.ended_at is not None)
        excess = len(self._execs) - MAX_EXECS
        for i, (ended_at, key) in enumerate(ended):  # not while its output is still being read
            if i < excess or (now - ended_at > FINISHED_KEEP_SECS and all(t.done() for t in self._execs[key].tasks)):
                del self._execs[key]

    def _live_execs(self) -> int:
        return sum(1 for e in self._execs.values() if e.ended_at is None)

    def _channel(self, exec_id: str) -> ExecChannel:
        entry = self._execs.get(exec_id)
        if entry is None:
            raise NotFoundError(f"no execution {exec_id} on node {self.node_id}")
        return entry.channel

    async def exec_stdin(self, exec_id: str, data: bytes) -> Envelope:
        try:
            await self._channel(exec_id).write_stdin(bytes(data))
            return _ok()
        except BaseException as e:
            return _err(e)

    async def exec_close_stdin(self, exec_id: str) -> Envelope:
        try:
            await self._channel(exec_id).close_stdin()
            return _ok()
        except BaseException as e:
            return _err(e)

    async def exec_control(self, exec_id: str, body: dict[str, Any]) -> Envelope:
        if body.get("op") not in ("kill", "signal", "resize"):
            return _err(BoxliteError(f"unknown control op {body.get('op')!r}"))
        try:
            await self._channel(exec_id).control(dict(body))
            return _ok()
        except BaseException as e:
            return _err(e)

    # --- files ------------------------------------------------------------------------------
    async def copy_in_open(
        self, box_id: str, dest: str, name: str, include_parent: bool, overwrite: bool, limit: int
    ) -> Envelope:
        now = time.monotonic()
        for key, stale in list(self._uploads.items()):
            if now - stale.touched > UPLOAD_IDLE_SECS:
                await self.copy_in_abort(key)
        if len(self._uploads) >= MAX_UPLOADS:
            return _err(ResourceExhaustedError(f"node {self.node_id} runs {MAX_UPLOADS} uploads already"))
        queue: asyncio.Queue[bytes | _Aborted | None] = asyncio.Queue(maxsize=4)

        async def chunks() -> AsyncIterator[bytes]:
            while (chunk := await queue.get()) is not None:
                if isinstance(chunk, _Aborted):
                    raise asyncio.CancelledError  # a cancellation of the upload that was lost (see copy_in_abort)
                yield chunk

        task = asyncio.ensure_future(self.local.copy_in(box_id, chunks(), dest, name, include_parent, overwrite))
        upload_id = uuid.uuid4().hex
        self._uploads[upload_id] = _Upload(queue, task, min(int(limit), MAX_TRANSFER_BYTES))
        return _ok(upload_id)

    async def copy_in_chunk(self, upload_id: str, data: bytes) -> Envelope:
        """One chunk; waits while the box has not taken the previous ones (bounded queue)."""
        up = self._uploads.get(upload_id)
        if up is None:
            return _err(NotFoundError(f"no upload {upload_id} on node {self.node_id}"))
        if len(data) > CHUNK:
            return _err(RequestTooLargeError(f"copy_in chunk of {len(data)} bytes (at most {CHUNK})"))
        up.received += len(data)
        up.touched = time.monotonic()
        if up.received > up.limit:
            await self.copy_in_abort(upload_id)
            return _err(RequestTooLargeError(f"copy_in larger than {up.limit} bytes"))
        put = asyncio.ensure_future(up.queue.put(bytes(data)))
        await asyncio.wait({put, up.task}, return_when=asyncio.FIRST_COMPLETED)
        if not put.done():  # the box side ended first (an error): report it
            put.cancel()
            return await self.copy_in_close(upload_id)
        return _ok()

    async def copy_in_close(self, upload_id: str) -> Envelope:
        up = self._uploads.get(upload_id)
        if up is None:
            return _err(NotFoundError(f"no upload {upload_id} on node {self.node_id}"))
        try:
            if not up.task.done():
                await up.queue.put(None)
            await up.task
            return _ok()
        except BaseException as e:
            return _err(e)
        finally:
            self._uploads.pop(upload_id, None)

    async def copy_in_abort(self, upload_id: str) -> Envelope:
        """Stop an upload: its box side is cancelled and, should that cancellation be lost (Python
        3.11's ``wait_for`` drops one that coincides with the awaited answer, e.g. the untar's start),
        finds the queue ending too; answers within ``ABORT_GRACE_SECS`` whatever the box does."""
        up = self._uploads.pop(upload_id, None)
        if up is not None:
            up.task.cancel()
            while not up.queue.empty():
                up.queue.get_nowait()
            up.queue.put_nowait(_ABORTED)
            await asyncio.wait({up.task}, timeout=ABORT_GRACE_SECS)
            up.task.add_done_callback(lambda t: t.cancelled() or t.exception())  # its error is the abort's
        return _ok()

    async def copy_out(
        self, box_id: str, src: str, name: str, follow_symlinks: bool, limit: int
    ) -> AsyncGenerator[Envelope, None]:
        """A tar stream of ``src``, at most ``limit`` bytes (a streaming generator)."""
        limit = min(int(limit), MAX_TRANSFER_BYTES)
        sent = 0
        gen = self.local.copy_out(box_id, src, name, follow_symlinks)
        try:
            async for chunk in gen:
                sent += len(chunk)
                if sent > limit:
                    raise RequestTooLargeError(f"copy_out larger than {limit} bytes")
                for i in range(0, len(chunk), CHUNK):
                    yield _ok(chunk[i : i + CHUNK])
        except BaseException as e:
            yield _err(e)
        finally:
            await gen.aclose()


SYNC_TIMEOUT = 30.0
"""Deadline of one update of the directory."""
SYNC_BATCH_SECS = 0.25
"""While calls keep the node busy, a directory update waits up to this long for a pause, so a burst
of creations is one update (each update is a Ray call: ~2 ms of CPU on each side); an idle node
sends at once."""
BUSY_TTL = 1.0
"""Seconds a node service reuses its list of busy boxes (for its box limit and ``hello``): a box
that stopped on its own frees its slot within this."""
PACKED = frozenset({"hello", "create", "call", "exec_begin", "exec_credit", "exec_close_stdin", "exec_control"})
"""Methods a driver calls through ``packed`` (data moves, ``exec_stdin`` and the copies, keep Ray's own
zero-copy handling of large ``bytes``)."""
LIMIT_VIEW_TTL = 10.0
"""Seconds a create trusts the list of busy boxes for the box limit (a burst of creations lists
once, not every ``BUSY_TTL``); a refusal is always confirmed by a fresh list."""
_CHANGES = frozenset({"remove", "start", "stop", "pause", "resume", "fork", "clone"})
_CALLS = frozenset({
    "get", "info", "list", "remove", "start", "stop", "ready", "box_metrics", "metrics", "image",
    "pause", "resume", "fork", "clone", "signal_main", "exec_detached",
    "snapshot_create", "snapshot_list", "snapshot_restore", "snapshot_remove",
})  # fmt: skip
