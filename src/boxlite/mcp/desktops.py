"""The desktop boxes (``ComputerBox``) of one MCP server, and a deadline on every action.

A desktop's session (the exec running Xvfb, openbox, x11vnc; its VNC password) lives in the
``ComputerBox`` object that started it, so only boxes created by ``create_computer_box`` on this
server take desktop actions; any other box gets a ``ConfigError`` saying so. Actions on one
desktop run one at a time (an agent's clicks and keystrokes keep their order).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..aio import within
from ..api.computerbox import ComputerBox
from ..api.execution import Execution
from ..api.runtime import Boxlite
from ..errors import (
    BoxliteError,
    ConfigError,
    InvalidStateError,
    ResourceExhaustedError,
    TimeoutError,
    UnsupportedOptionError,
)
from . import execs, limits

T = TypeVar("T")
Progress = Callable[[float, float | None, str], Awaitable[None]]


@dataclass
class Desktop:
    computer: ComputerBox
    action_timeout: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    launched: set[asyncio.Task[None]] = field(default_factory=set)


def check_screen(width: int, height: int) -> None:
    side = range(limits.MIN_SCREEN_SIDE, limits.MAX_SCREEN_SIDE + 1)
    if width not in side or height not in side:
        raise ConfigError(f"width and height must be {side.start}..{side.stop - 1} pixels, got {width}x{height}")
    if width * height > limits.MAX_SCREEN_PIXELS:
        raise ConfigError(f"a screen of at most {limits.MAX_SCREEN_PIXELS} pixels, got {width}x{height}")


def raw_screenshot_cap(width: int, height: int) -> int:
    """What the box may send for one screenshot: the XWD dump of this screen (32-bit pixels) plus
    room for its header and colormap; a box sending more is cut off (``ScreenshotTooLargeError``)."""
    return width * height * 4 + limits.XWD_SLACK


class Desktops:
    """The ComputerBoxes this server created, by box id."""

    def __init__(self) -> None:
        self._by_id: dict[str, Desktop] = {}
        self._starting = 0  # creations under way count against MAX_DESKTOPS too

    async def create(
        self, rt: Boxlite, *, name: str | None, cpus: int | None, memory_mib: int | None, width: int, height: int,
        action_timeout: float | None, timeout: float | None, progress: Progress,
    ) -> ComputerBox:  # fmt: skip
        """Create and start a desktop box and wait until its desktop answers, within ``timeout``
        (a first use builds the desktop image from Debian packages: minutes). On failure or
        cancellation the box is removed."""
        try:
            rt.home  # noqa: B018 - the image is built in the runtime's home: a local runtime only
        except InvalidStateError:
            raise UnsupportedOptionError(
                "desktop boxes", "need a local runtime (over --url, use the server's own `serve --mcp`)"
            ) from None
        check_screen(width, height)
        secs = execs.check_timeout(timeout if timeout is not None else limits.DESKTOP_CREATE_TIMEOUT)
        act = execs.check_timeout(action_timeout if action_timeout is not None else limits.DESKTOP_ACTION_TIMEOUT)
        await self._prune(rt)
        if len(self._by_id) + self._starting >= limits.MAX_DESKTOPS:
            raise ResourceExhaustedError(f"this server runs {limits.MAX_DESKTOPS} desktop boxes already")
        self._starting += 1
        try:
            computer = await self._start(rt, name, cpus, memory_mib, width, height, act, secs, progress)
        finally:
            self._starting -= 1
        self._by_id[computer.id] = Desktop(computer, act)
        return computer

    async def _start(
        self, rt: Boxlite, name: str | None, cpus: int | None, memory_mib: int | None, width: int, height: int,
        act: float, secs: float, progress: Progress,
    ) -> ComputerBox:  # fmt: skip
        sizing: dict[str, Any] = {k: v for k, v in (("cpu", cpus), ("memory", memory_mib)) if v is not None}
        computer = ComputerBox(
            runtime=rt, name=name, auto_remove=False, width=width, height=height,
            max_screenshot_bytes=raw_screenshot_cap(width, height), action_timeout=act, **sizing,
        )  # fmt: skip
        deadline = time.monotonic() + secs
        try:
            async with asyncio.timeout(secs):
                with contextlib.suppress(Exception):  # a client gone away must not fail the creation
                    await progress(0, None, "preparing the desktop image (built on first use: minutes)")
                await computer.start()
                await computer.wait_until_ready(timeout=max(1.0, deadline - time.monotonic()))
        except BaseException as e:
            await _discard(rt, computer)
            if isinstance(e, builtins.TimeoutError) and not isinstance(e, BoxliteError):
                raise TimeoutError(f"the desktop box was not ready within {secs:g} s") from None
            raise
        return computer

    def get(self, box_id: str, shown: str) -> Desktop:
        found = self._by_id.get(box_id)
        if found is None:
            raise ConfigError(f"box {shown!r} is not a desktop box: create one with create_computer_box")
        return found

    def __contains__(self, box_id: str) -> bool:
        return box_id in self._by_id

    async def forget(self, box_id: str) -> None:
        """Drop a desktop (its box stopped or removed): end its session and launched programs."""
        desktop = self._by_id.pop(box_id, None)
        if desktop is None:
            return
        for task in desktop.launched:
            task.cancel()
        with contextlib.suppress(BaseException):
            await within(desktop.computer.stop(), limits.KILL_GRACE)

    async def act(self, desktop: Desktop, steps: float, action: Callable[[ComputerBox], Awaitable[T]]) -> T:
        """Run ``action`` (``steps`` ComputerBox actions, each with the desktop's own deadline)
        under an outer deadline that also covers starting the execs and waiting for earlier
        actions on the same desktop."""
        secs = desktop.action_timeout * steps + limits.KILL_GRACE
        try:
            async with asyncio.timeout(secs):
                async with desktop.lock:
                    return await action(desktop.computer)
        except builtins.TimeoutError as e:
            if isinstance(e, BoxliteError):
                raise
            raise TimeoutError(f"the desktop action did not finish within {secs:g} s") from None

    async def launch(self, desktop: Desktop, command: Sequence[str]) -> None:
        """Start a GUI program on the desktop without waiting for it; its output is read and
        dropped (so it never blocks on a full pipe)."""
        execs.check_command(command, None)
        desktop.launched = {t for t in desktop.launched if not t.done()}
        if len(desktop.launched) >= limits.MAX_LAUNCHED:
            raise ResourceExhaustedError(f"{limits.MAX_LAUNCHED} launched programs still run on this desktop")
        execution = await self.act(desktop, 1, lambda c: c.launch(command[0], *command[1:]))
        task = asyncio.create_task(_drain(execution))
        desktop.launched.add(task)

    async def _prune(self, rt: Boxlite) -> None:
        """Forget desktops whose box is gone or no longer runs (stopped or removed elsewhere)."""
        for box_id in list(self._by_id):
            try:
                box = await rt.get(box_id)
            except BoxliteError:
                continue  # unknown now: keep it
            if box is None or not box.info().state.running:
                await self.forget(box_id)


async def _drain(execution: Execution) -> None:
    async def read(chunks: Any) -> None:
        async for _ in chunks:
            pass

    with contextlib.suppress(BoxliteError):
        await asyncio.gather(read(execution.stdout().bytes()), read(execution.stderr().bytes()))


async def _discard(rt: Boxlite, computer: ComputerBox) -> None:
    """Stop and remove a desktop box whose creation failed (best effort, bounded)."""
    with contextlib.suppress(BaseException):
        await within(computer.stop(), limits.KILL_GRACE)
    with contextlib.suppress(BaseException):
        await within(rt.remove(computer.id, force=True), limits.KILL_GRACE)
