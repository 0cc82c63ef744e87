"""Fork a running box: ``n`` new boxes, each running from the source's memory and disk as they
were at one instant. The source is paused (memory kept) while its memory is saved for the forks
and its writable disk layer copied into each (``snapshots.clone``), then goes on; each fork is a
box paused to disk with that memory, resumed at once (``pause.resume``). One copy of a VM box
loads the memory through a pipe while the source writes it (the save and the load overlap, and
no file is written). Engines that cannot save a frozen box's memory (the namespace engine
without CRIU) raise ``UnsupportedOptionError``.
"""

from __future__ import annotations

import asyncio
import contextlib

from ..errors import ConfigError, InvalidStateError
from . import pause, snapshots
from .state import BoxRecord, now

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..engines.base import BoxSpec, Engine
    from .lifecycle import BoxRuntime

MAX_FORKS = 16
"""Forks per call: each is a whole box (a VM and its RAM)."""


async def fork(rt: BoxRuntime, box_id: str, n: int = 1) -> list[BoxRecord]:
    """``n`` running copies of the running box ``box_id`` (which keeps running)."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_FORKS:
        raise ConfigError(f"n must be an integer from 1 to {MAX_FORKS}, got {n!r}")
    rt.check_open()
    rec = rt.record(box_id)
    if rec.state != "running":
        raise InvalidStateError(f"box {rec.id} is {rec.state}; only a running box can be forked")
    engine, spec = rt.engine_for(rec), rt.spec(rec)
    engine.check_forkable(spec)  # before the pause and the disk copies a refusal would waste
    if n == 1 and engine.streams_forks:
        return [await _fork_streamed(rt, rec, engine, spec)]
    rec = await pause.pause(rt, rec.id)
    made: list[BoxRecord] = []
    try:
        await engine.fork_state(spec, pause.running_of(rt, rec))
        for _ in range(n):
            child = await snapshots.clone(rt, rec.id, None)  # the source is paused: its disk as it is
            made.append(child)
            engine.adopt_fork_state(rt.spec(child), spec)
            child.state, child.paused_to_disk, child.paused_at = pause.PAUSED, True, now()
            rt.db.update(child)
    except BaseException:
        for child in made:
            with contextlib.suppress(Exception):
                await rt.remove(child.id, force=True)
        raise
    finally:
        engine.forget_fork_state(spec)
        await pause.resume(rt, rec.id)
    started: list[BoxRecord] = []
    for child in made:
        try:
            started.append(await pause.resume(rt, child.id))
        except BaseException:
            for other in made:
                with contextlib.suppress(Exception):
                    await rt.remove(other.id, force=True)
            raise
    return started


async def _fork_streamed(rt: BoxRuntime, rec: BoxRecord, engine: Engine, spec: BoxSpec) -> BoxRecord:
    """One copy, whose new QEMU loads the source's memory as the source's QEMU writes it. The
    source goes on once all of it is written (or the copy failed): a copy that cannot start
    ends the write at once (its pipe closes), one that stops reading fails it at its deadline."""
    rec = await pause.pause(rt, rec.id)
    child: BoxRecord | None = None
    starting: asyncio.Future[BoxRecord] | None = None
    try:
        try:
            child = await snapshots.clone(rt, rec.id, None)  # the source is paused: its disk as it is
            child.state, child.paused_to_disk, child.paused_at = pause.PAUSED, True, now()
            rt.db.update(child)
            write_end = await engine.prepare_fork_stream(rt.spec(child), spec)
            sending = asyncio.ensure_future(engine.send_fork_stream(spec, write_end, rt.spec(child).ready_timeout))
            starting = asyncio.ensure_future(pause.resume(rt, child.id))
            await asyncio.wait({sending})
        finally:
            engine.forget_fork_state(spec)
            await pause.resume(rt, rec.id)
        started = await starting
        sending.result()  # (a failed send fails the copy's start first: it reads a cut stream)
        return started
    except BaseException:
        if starting is not None:
            starting.cancel()
            with contextlib.suppress(BaseException):
                await starting
        if child is not None:
            with contextlib.suppress(Exception):
                await rt.remove(child.id, force=True)
        raise
