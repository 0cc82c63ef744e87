"""``Execution``: one running command, its streams, stdin and exit status."""

from __future__ import annotations

import asyncio
import builtins
import codecs
import signal as _signal
from collections.abc import AsyncIterator
from typing import Any, Protocol

from ..errors import BoxDiedError, InvalidStateError
from .results import ExecStatus, oom_message


class OutputSource(Protocol):
    """One output stream of an execution (local agent connection or remote server)."""

    async def read(self) -> bytes | None: ...

    async def read_all(self) -> bytes: ...


class ExecChannelLike(Protocol):
    """What ``Execution`` needs from a running command's transport."""

    pid: int
    exit: asyncio.Future[dict[str, Any]]

    @property
    def stdout(self) -> OutputSource: ...

    @property
    def stderr(self) -> OutputSource: ...

    @property
    def stdin_closed(self) -> bool: ...

    async def write_stdin(self, data: bytes) -> None: ...

    async def close_stdin(self) -> None: ...

    async def control(self, body: dict[str, Any]) -> None: ...


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
            try:
                body = await self._channel.exit
            except BoxDiedError as e:
                self._box._count_exec(error=True)
                self._result = ExecStatus(exit_code=-1, error_message=str(e))
                return self._result
            sig = body.get("signal")
            message = None
            if body.get("timed_out"):
                message = "timed out"
            elif body.get("oom_killed"):
                message = str(body.get("error_message") or oom_message(getattr(self._box, "memory_mib", None)))
            elif sig:
                message = f"killed by signal {sig} ({_signame(int(sig))})"
            self._result = ExecStatus(
                exit_code=int(body["exit_code"]),
                signal=sig,
                timed_out=bool(body.get("timed_out")),
                error_message=message,
                duration_ms=body.get("duration_ms"),
                oom_killed=bool(body.get("oom_killed")),
            )
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


def _signame(sig: int) -> str:
    try:
        return _signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"
