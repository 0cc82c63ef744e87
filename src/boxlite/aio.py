"""asyncio helpers for every layer (stdlib only, imports no boxlite module).

``within`` is ``asyncio.wait_for`` without its Python 3.11 bug (CPython gh-86296, fixed in 3.12
by rewriting ``wait_for`` over ``asyncio.timeout``): when the task awaiting ``wait_for`` is
cancelled in the same loop iteration as the awaited result arrives, 3.11's ``wait_for`` returns
the result and the cancellation is lost; the cancelled task goes on as if it had not been (a Ray
node's refused upload, whose only end was that cancellation, waited forever). Use ``within``,
not ``asyncio.wait_for``, in BoxLite.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(step: Awaitable[T], timeout: float | None) -> T:
    """``await step`` with a deadline, as ``asyncio.wait_for(step, timeout)`` of Python 3.12: ``None``
    waits as long as it takes; when ``timeout`` seconds pass, ``step`` is cancelled (and awaited
    until it ends) and ``TimeoutError`` is raised (a ``step`` that ignores its cancellation and
    returns gives its result); ``timeout <= 0`` gives the result of a ``step`` already done, else
    cancels it before it runs. A cancellation of the awaiting task is never lost.

    Unlike 3.11's ``wait_for``, a coroutine runs in the awaiting task (no task of its own), as
    with ``asyncio.timeout``. The deadline gives ``TimeoutError`` even in a task that swallowed an
    earlier cancellation (3.11's ``asyncio.timeout`` then lets its ``CancelledError`` through)."""
    if sys.version_info < (3, 11):  # pragma: no cover - Python 3.10 has no asyncio.timeout
        return await asyncio.wait_for(step, timeout)
    if timeout is None:
        return await step
    if timeout <= 0:
        fut = asyncio.ensure_future(step)
        if fut.done():
            return fut.result()
        fut.cancel()
        await asyncio.wait({fut})  # the awaiting task's cancellation propagates, as in wait_for
        try:
            return fut.result()
        except asyncio.CancelledError as e:
            raise TimeoutError from e
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("within() must run in a task")  # as asyncio.timeout
    cancels = task.cancelling()
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            return await step
    except asyncio.CancelledError as e:
        # 3.11's Timeout turns its own cancellation into TimeoutError only if the task has no other
        # cancellation request outstanding at all: one swallowed earlier (never uncancel()ed) counts.
        if deadline.expired() and task.cancelling() <= cancels:
            raise TimeoutError from e
        raise
