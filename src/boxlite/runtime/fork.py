"""Fork a running box: ``n`` new boxes, each running from the source's memory and disk as they
were at one instant. The source is paused (memory kept) while its memory is saved for the forks
and its writable disk layer copied into each (``snapshots.clone``), then goes on; each fork is a
box paused to disk with that memory, resumed at once (``pause.resume``). Engines that cannot
save a frozen box's memory (the namespace engine without CRIU) raise ``UnsupportedOptionError``.
"""

from __future__ import annotations

import contextlib

from ..errors import ConfigError, InvalidStateError
from . import pause, snapshots
from .state import BoxRecord, now

TYPE_CHECKING = False
if TYPE_CHECKING:
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
