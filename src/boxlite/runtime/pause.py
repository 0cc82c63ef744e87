"""Pause and resume a running box, with its memory kept (engine ``freeze``/``thaw``) or saved to
its dir (``to_disk``: engine ``save``/``restore``, the host processes end). Engine-agnostic.

States: "running" → "paused" → "running". A paused box is in the state database like any
other, so every process sharing the home sees it (``boxlite ls``). Exec on it raises
``InvalidStateError`` (the backend resumes it first when the box has ``auto_resume``); stop and
remove work (a frozen box is thawed so that it can shut down; a box paused to disk only has its
saved state deleted). A box paused with memory kept still has its lifeline: if its owner dies,
it is stopped like a running one. One paused to disk has no process and no owner: it outlives
the process that paused it (``BoxRuntime.shutdown`` leaves it) and any process may resume it.
"""

from __future__ import annotations

import time

from ..engines.base import RunningBox
from ..errors import InvalidStateError
from .locks import box_lock
from .state import BoxRecord, now

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .lifecycle import BoxRuntime

PAUSED = "paused"


def running_of(rt: BoxRuntime, rec: BoxRecord) -> RunningBox:
    return RunningBox(rec.pid or 0, rec.pid_start or 0, rt.layout(rec.id).agent_socket)


async def pause(rt: BoxRuntime, box_id: str, to_disk: bool = False) -> BoxRecord:
    """Freeze a running box (idempotent for a box already paused the same way). ``to_disk``:
    save its memory in its dir and end its host processes (also for a box paused in memory)."""
    rt.check_open()
    async with box_lock(rt.layout(box_id).lock):
        rec = rt.record(box_id, locked=True)
        if rec.state == PAUSED and (rec.paused_to_disk or not to_disk):
            return rec
        if rec.state not in ("running", PAUSED):
            raise InvalidStateError(f"box {rec.id} is {rec.state}; only a running box can be paused")
        if rec.state == "running" and rt.main_exit(rec.id) is not None:
            raise InvalidStateError(f"box {rec.id} has exited (its main process ended); nothing to pause")
        engine, spec = rt.engine_for(rec), rt.spec(rec)
        running = running_of(rt, rec)
        before = (rec.state, rec.paused_to_disk, rec.paused_at)
        # Recorded first: a process killed half-way leaves a box marked paused, which resume
        # (or stop) then sorts out, never a frozen box marked running that nothing would thaw.
        rec.state, rec.paused_to_disk, rec.paused_at = PAUSED, to_disk, now()
        rt.db.update(rec)
        try:
            if to_disk:
                await engine.save(spec, running)  # raises UnsupportedOptionError where it cannot
            else:
                await engine.freeze(spec, running)
        except BaseException:
            rec.state, rec.paused_to_disk, rec.paused_at = before
            rt.db.update(rec)
            raise
        if to_disk:
            await rt._drop_client(rec.id)
            rec.pid = rec.pid_start = None
            rec.owner_pid = rec.owner_start = None
            rt.owned.discard(rec.id)  # nothing of it runs: no owner to outlive
            rt.db.update(rec)
        return rec


async def resume(rt: BoxRuntime, box_id: str, detach: bool | None = None) -> BoxRecord:
    """Continue a paused box where it was (idempotent for a running box). A box paused to disk
    is restored by this process, which becomes its owner unless it is detached (``detach``
    changes that first, as ``start`` does: a CLI resumes it detached)."""
    rt.check_open()
    async with box_lock(rt.layout(box_id).lock):
        rec = rt.record(box_id, locked=True)
        if rec.state == "running":
            return rec
        if rec.state != PAUSED:
            raise InvalidStateError(f"box {rec.id} is {rec.state}, not paused")
        engine, spec = rt.engine_for(rec), rt.spec(rec)
        if rec.paused_to_disk and rt._alive(rec):  # its save never finished (a killed process): it still runs
            await engine.thaw(spec, running_of(rt, rec))
            engine.forget_saved_state(spec)
        elif rec.paused_to_disk:
            if detach is not None:
                rec.detach = bool(detach)
            t0 = time.monotonic()
            running = await engine.restore(spec)
            rec.pid, rec.pid_start = running.pid, running.pid_start
            rec.owner_pid, rec.owner_start = rt._pid, rt._pid_start
            rec.boot_ms = (time.monotonic() - t0) * 1000
            if not rec.detach:
                rt.owned.add(rec.id)
        else:
            await engine.thaw(spec, running_of(rt, rec))
        rec.state, rec.paused_to_disk, rec.paused_at = "running", False, None
        rt.db.update(rec)
        return rec


async def release(rt: BoxRuntime, rec: BoxRecord) -> bool:
    """Before stopping or removing a paused box (box lock held): thaw a frozen one, so that it
    can shut down; forget a saved state (nothing runs: the box is then stopped). True when the
    box still has processes to stop."""
    engine, spec = rt.engine_for(rec), rt.spec(rec)
    if rec.paused_to_disk:
        engine.forget_saved_state(spec)
    if rec.paused_to_disk and not rt._alive(rec):
        engine.cleanup(spec)
        rec.state, rec.paused_to_disk, rec.paused_at = "stopped", False, None
        rt.db.update(rec)
        return False
    try:
        await engine.thaw(spec, running_of(rt, rec))
    except Exception:  # the stop that follows kills it anyway (and thaws the cgroup)
        pass
    return True


def auto_resumes(rec: BoxRecord) -> bool:
    """BoxLite's ``auto_resume``: an exec, file copy or attach on the paused box resumes it."""
    return bool(getattr(rec.config, "auto_resume", False))
