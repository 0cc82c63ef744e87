"""Connect an ``Execution`` to this process's terminal or pipes.

Plain mode copies stdout/stderr through and forwards stdin (``-i``) and signals. TTY mode
(``-t``) puts the host terminal in raw mode, forwards every keystroke (so Ctrl-C reaches the
box's terminal), resizes the box's pty on SIGWINCH, and restores the terminal on any exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import termios
import tty
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import BinaryIO

from ..api.execution import ExecStdin, Execution
from ..api.results import ExecStatus
from .fdwrite import write_all

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
OUTPUT_GRACE = 1.0  # seconds to keep draining output after the command exited


def terminal_size() -> tuple[int, int]:
    """(rows, cols) of the host terminal (stdout, then stdin), else 24x80."""
    for fd in (1, 0, 2):
        with contextlib.suppress(OSError):
            size = os.get_terminal_size(fd)
            return size.lines, size.columns
    size = shutil.get_terminal_size()
    return size.lines, size.columns


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """Raw mode on ``fd`` (a tty) for the duration; the old settings are always restored."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class Attachment:
    """Pumps between one execution and the host's fds 0/1/2."""

    def __init__(self, execution: Execution, *, tty: bool, stdin: bool, log: BinaryIO | None = None) -> None:
        self.execution = execution
        self.tty = tty
        self.stdin = stdin
        self.log = log
        self.progress = 0
        self._interrupts = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> ExecStatus:
        """Attach until the command exits; returns its status."""
        raw = self.tty and self.stdin and os.isatty(0)
        with raw_terminal(0) if raw else contextlib.nullcontext():
            return await self._run()

    async def _run(self) -> ExecStatus:
        loop = asyncio.get_running_loop()
        ex = self.execution
        outputs = [asyncio.ensure_future(self._copy(ex.stdout().bytes(), 1))]
        if not self.tty:
            outputs.append(asyncio.ensure_future(self._copy(ex.stderr().bytes(), 2)))
        feeder = asyncio.ensure_future(self._feed(ex.stdin())) if self.stdin else None
        handled: list[signal.Signals] = []
        for sig in FORWARDED:
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                loop.add_signal_handler(sig, self._on_signal, sig)
                handled.append(sig)
        if self.tty and os.isatty(1):
            loop.add_signal_handler(signal.SIGWINCH, self._on_resize)
            handled.append(signal.SIGWINCH)
        try:
            status = await ex.wait()
            await self._drain(outputs)
            return status
        finally:
            for handled_sig in handled:
                loop.remove_signal_handler(handled_sig)
            for task in [*outputs, *([feeder] if feeder else []), *self._tasks]:
                task.cancel()
            await asyncio.gather(*outputs, *([feeder] if feeder else []), return_exceptions=True)

    async def _drain(self, outputs: Sequence[asyncio.Future[None]]) -> None:
        """Let output in flight arrive; give up once it stops flowing (background children
        may hold the pipes open forever)."""
        while True:
            before = self.progress
            _, pending = await asyncio.wait(outputs, timeout=OUTPUT_GRACE)
            if not pending or self.progress == before:
                return

    async def _copy(self, chunks: AsyncIterator[bytes], fd: int) -> None:
        broken = False
        async for chunk in chunks:
            self.progress += len(chunk)
            if self.log is not None:
                self.log.write(chunk)
                self.log.flush()
            if broken:
                continue
            try:
                write_all(fd, chunk)
            except BrokenPipeError:  # like a local pipeline: the writer gets SIGPIPE
                broken = True  # and we keep consuming so it is not blocked by flow control
                self._spawn(self.execution.signal(signal.SIGPIPE))

    async def _feed(self, stdin: ExecStdin) -> None:
        """Forward host stdin until EOF (works for ttys, pipes and regular files)."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                ready: asyncio.Future[None] = loop.create_future()
                try:
                    loop.add_reader(0, _set_once, ready)
                except PermissionError:  # regular file: always readable
                    ready.set_result(None)
                else:
                    try:
                        await ready
                    finally:
                        loop.remove_reader(0)
                try:
                    data = os.read(0, 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    await stdin.close()
                    return
                await stdin.send_input(data)
        except asyncio.CancelledError:
            raise
        except Exception:  # the command exited while we were writing: nothing to do
            return

    def _on_signal(self, sig: int) -> None:
        if sig == signal.SIGINT and not self.tty:
            self._interrupts += 1
            if self._interrupts >= 3:
                self._spawn(self.execution.kill())
                return
        self._spawn(self.execution.signal(sig))

    def _on_resize(self) -> None:
        rows, cols = terminal_size()
        self._spawn(self.execution.resize_tty(rows, cols))

    def _spawn(self, coro: object) -> None:
        async def guarded() -> None:
            with contextlib.suppress(Exception):
                await coro  # type: ignore[misc]

        task = asyncio.ensure_future(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _set_once(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def stdin_is_tty() -> bool:
    return sys.stdin is not None and os.isatty(0)
