"""``InteractiveBox``: a shell in a box wired to this process's terminal."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import termios
import tty as _tty
from typing import Any

from .execution import Execution
from .results import ExecStatus
from .runtime import Boxlite
from .simplebox import SimpleBox


class InteractiveBox(SimpleBox):
    """``async with InteractiveBox(image=...) as box: await box.wait()`` gives you a shell.

    With a terminal on stdin (or ``tty=True``) the terminal goes to raw mode, keystrokes are
    forwarded, the box's PTY follows window resizes, and the terminal is restored on exit.
    """

    def __init__(self, image: str | None = None, shell: str = "/bin/sh", tty: bool | None = None,
                 memory_mib: int | None = None, cpus: float | None = None, runtime: Boxlite | None = None,
                 name: str | None = None, auto_remove: bool = True, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(image=image, memory_mib=memory_mib, cpus=cpus, runtime=runtime, name=name,
                         auto_remove=auto_remove, **kwargs)  # fmt: skip
        self._shell = shell
        self._tty = tty
        self._execution: Execution | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._saved: list[Any] | None = None
        self._resize: asyncio.Future[None] | None = None

    async def __aenter__(self) -> InteractiveBox:
        await super().__aenter__()
        use_tty = self._tty if self._tty is not None else sys.stdin.isatty()
        size = shutil.get_terminal_size()
        self._execution = await self.box.exec(self._shell, [], tty=use_tty, rows=size.lines, cols=size.columns)
        loop = asyncio.get_running_loop()
        stdin_fd = sys.stdin.fileno()
        if use_tty and os.isatty(stdin_fd):
            self._saved = termios.tcgetattr(stdin_fd)
            _tty.setraw(stdin_fd)
            loop.add_signal_handler(signal.SIGWINCH, self._on_resize)
        self._tasks = [
            loop.create_task(self._copy_out(self._execution.stdout(), sys.stdout)),
            loop.create_task(self._copy_out(self._execution.stderr(), sys.stderr)),
            loop.create_task(self._copy_in(stdin_fd)),
        ]
        return self

    def _on_resize(self) -> None:
        if self._execution is not None:
            size = shutil.get_terminal_size()
            self._resize = asyncio.ensure_future(self._execution.resize_tty(size.lines, size.columns))

    async def _copy_out(self, stream: Any, target: Any) -> None:
        out = getattr(target, "buffer", target)
        async for chunk in stream.bytes():
            out.write(chunk)
            out.flush()

    async def _copy_in(self, fd: int) -> None:
        assert self._execution is not None
        stdin = self._execution.stdin()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue()

        def readable() -> None:
            try:
                queue.put_nowait(os.read(fd, 4096))
            except OSError:
                queue.put_nowait(b"")

        loop.add_reader(fd, readable)
        try:
            while data := await queue.get():
                await stdin.send_input(data)
            await stdin.close()
        finally:
            loop.remove_reader(fd)

    async def wait(self) -> ExecStatus:
        """Wait for the shell to exit."""
        assert self._execution is not None, "use 'async with InteractiveBox(...)'"
        status = await self._execution.wait()
        await asyncio.wait(self._tasks[:2], timeout=3)
        return status

    async def __aexit__(self, *exc: object) -> None:
        if self._saved is not None:
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self._saved)
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGWINCH)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await super().__aexit__(*exc)
