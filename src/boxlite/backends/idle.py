"""``auto_pause``: pause a box (memory kept) once it has been idle for its ``auto_pause`` seconds.

Activity is what BoxLite counts: an exec (while it runs, and when it ends) and a file copy.
Metrics, info and listing are not activity. The timer runs in the process that uses the box
(the one running ``boxlite serve`` for REST clients): a box nobody uses from a live process is
not watched. ``auto_resume`` then lets the next exec or copy resume it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from ..aio import within
from ..errors import BoxliteError

log = logging.getLogger("boxlite.idle")
MIN_CHECK = 0.05


class IdleWatcher:
    """One asyncio task for all watched boxes of a backend. ``pause(box_id)`` pauses a box;
    ``limit(box_id)`` is its current ``auto_pause`` (0: not watched) and whether it still runs."""

    def __init__(
        self,
        pause: Callable[[str], Awaitable[object]],
        limit: Callable[[str], tuple[int, bool]],
    ) -> None:
        self._pause = pause
        self._limit = limit
        self._last: dict[str, float] = {}
        self._busy: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def touch(self, box_id: str, seconds: int) -> None:
        """Activity on a box with ``auto_pause`` = ``seconds`` (0: nothing to watch)."""
        if seconds <= 0:
            return
        self._last[box_id] = time.monotonic()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="boxlite-auto-pause")

    def begin(self, box_id: str, seconds: int) -> Callable[[object], None]:
        """An execution started: the box is busy until the returned callback runs."""
        self.touch(box_id, seconds)
        if seconds <= 0:
            return lambda _: None
        self._busy[box_id] = self._busy.get(box_id, 0) + 1

        def done(_: object) -> None:
            self._busy[box_id] = max(0, self._busy.get(box_id, 1) - 1)
            self._last[box_id] = time.monotonic()

        return done

    def forget(self, box_id: str) -> None:
        self._last.pop(box_id, None)
        self._busy.pop(box_id, None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._task = None

    async def _run(self) -> None:
        while self._last:
            now = time.monotonic()
            wait = 3600.0
            for box_id, last in list(self._last.items()):
                try:
                    seconds, running = self._limit(box_id)
                except BoxliteError:  # removed
                    self.forget(box_id)
                    continue
                if seconds <= 0 or not running:
                    self.forget(box_id)
                    continue
                if self._busy.get(box_id):
                    wait = min(wait, float(seconds))
                    continue
                due = last + seconds
                if now >= due:
                    self.forget(box_id)
                    try:
                        await self._pause(box_id)
                    except BoxliteError as e:
                        log.warning("auto_pause of box %s failed: %s", box_id, e)
                else:
                    wait = min(wait, due - now)
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await within(self._wake.wait(), max(MIN_CHECK, wait))
