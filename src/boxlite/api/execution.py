"""``Execution``: one running command, its streams, stdin and exit status."""

from __future__ import annotations

import builtins
import codecs
import signal as _signal
from collections.abc import AsyncIterator
from typing import Protocol

from ..backends.base import ExecChannel, OutputSource, wait_exit
from ..errors import InvalidStateError
from .results import ExecStatus

ExecChannelLike = ExecChannel
"""What ``Execution`` needs from a running command's transport (see ``backends.base``)."""


class ExecOwner(Protocol):
    """The box an execution counts against."""

    def _count_exec(self, error: bool) -> None: ...


class ExecStream:
    """Async iterator over an output stream: ``str`` chunks as they are produced.

    Chunks are decoded as UTF-8 (invalid bytes replaced, multi-byte characters never split)
    and keep their newlines; ``"".join(chunks)`` is the whole output. ``bytes()`` iterates raw.
    """

    def __init__(self, stream: OutputSource) -> None:
        self._stream = stream
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def __aiter__(self) -> AsyncIterator[str]:
        return self._text()

    async def _text(self) -> AsyncIterator[str]:
        while True:
            chunk = await self._stream.read()
            if chunk is None:
                tail = self._decoder.decode(b"", final=True)
                if tail:
                    yield tail
                return
            text = self._decoder.decode(chunk)
            if text:
                yield text

    async def bytes(self) -> AsyncIterator[builtins.bytes]:
        while (chunk := await self._stream.read()) is not None:
            yield chunk

    async def read(self) -> str:
        """The rest of the stream as one string."""
        return "".join([part async for part in self])

    async def read_bytes(self) -> builtins.bytes:
        return await self._stream.read_all()


class ExecStdout(ExecStream):
    pass


class ExecStderr(ExecStream):
    pass


class ExecStdin:
    """Writer for the process's standard input (flow-controlled)."""

    def __init__(self, channel: ExecChannelLike) -> None:
        self._channel = channel

    async def send_input(self, data: bytes | str) -> None:
        await self._channel.write_stdin(data.encode() if isinstance(data, str) else bytes(data))

    async def write(self, data: bytes | str) -> None:
        await self.send_input(data)

    async def close(self) -> None:
        await self._channel.close_stdin()

    async def is_closed(self) -> bool:
        return self._channel.stdin_closed


class Execution:
    """A command started with ``Box.exec``."""

    def __init__(self, box: ExecOwner, channel: ExecChannelLike, exec_id: str) -> None:
        self._box = box
        self._channel = channel
        self._id = exec_id
        self._taken: set[str] = set()
        self._result: ExecStatus | None = None

    def id(self) -> str:
        return self._id

    @property
    def pid(self) -> int:
        """The process id inside the box."""
        return self._channel.pid

    def _take(self, what: str) -> None:
        if what in self._taken:
            raise InvalidStateError(f"{what} stream not available (it can be taken only once)")
        self._taken.add(what)

    def stdout(self) -> ExecStdout:
        self._take("stdout")
        return ExecStdout(self._channel.stdout)

    def stderr(self) -> ExecStderr:
        self._take("stderr")
        return ExecStderr(self._channel.stderr)

    def stdin(self) -> ExecStdin:
        self._take("stdin")
        return ExecStdin(self._channel)

    async def wait(self) -> ExecStatus:
        """Wait for the exit status (cached; may be awaited repeatedly)."""
        if self._result is None:
            self._result = await wait_exit(self._channel, getattr(self._box, "memory_mib", None))
            self._box._count_exec(error=self._result.exit_code != 0)
        return self._result

    async def kill(self, sig: int | None = None) -> None:
        """SIGKILL the process group (or send ``sig`` to the process)."""
        if sig is None or sig == _signal.SIGKILL:
            await self._channel.control({"op": "kill"})
        else:
            await self.signal(sig)

    async def signal(self, sig: int) -> None:
        await self._channel.control({"op": "signal", "signal": int(sig)})

    async def resize_tty(self, rows: int, cols: int) -> None:
        await self._channel.control({"op": "resize", "rows": int(rows), "cols": int(cols)})

    def __repr__(self) -> str:
        return f"Execution(id={self._id!r}, pid={self.pid})"
