"""BoxLite's orphan policy on the wire executions: a command no client is attached to gets
SIGHUP after the idle time; an attached one is left alone (server/boxlite_wire/executions.py)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from typing import Any

from boxlite.api.results import ExecStatus
from boxlite.server.boxlite_wire.executions import WireExec


class _Stream:
    async def bytes(self) -> AsyncIterator[bytes]:
        await asyncio.Event().wait()  # never any output
        yield b""


class _Stdin:
    async def close(self) -> None:
        pass


class FakeExecution:
    """Ends when it receives a signal, as a command without handlers does."""

    def __init__(self) -> None:
        self.signals: list[int] = []
        self._ended = asyncio.Event()

    def stdout(self) -> Any:
        return _Stream()

    def stderr(self) -> Any:
        return _Stream()

    def stdin(self) -> Any:
        return _Stdin()

    async def wait(self) -> ExecStatus:
        await self._ended.wait()
        return ExecStatus(exit_code=128 + self.signals[-1], signal=self.signals[-1])

    async def signal(self, sig: int) -> None:
        self.signals.append(sig)
        self._ended.set()


async def test_orphaned_execution_gets_sighup() -> None:
    ex = FakeExecution()
    rec = WireExec("exec-1", "box", ex, tty=False, orphan_secs=0.2)  # type: ignore[arg-type]
    await asyncio.wait_for(asyncio.shield(rec.waiter), 5)
    assert ex.signals == [signal.SIGHUP]
    assert rec.info()["status"] == "killed" and rec.info()["exit_code"] == 128 + signal.SIGHUP
    rec.discard()


async def test_attached_execution_is_not_reaped_until_detached() -> None:
    ex = FakeExecution()
    rec = WireExec("exec-2", "box", ex, tty=False, orphan_secs=0.2)  # type: ignore[arg-type]
    rec.attach()
    await asyncio.sleep(0.6)
    assert ex.signals == [] and rec.running
    rec.detach()
    await asyncio.wait_for(asyncio.shield(rec.waiter), 5)
    assert ex.signals == [signal.SIGHUP]
    rec.discard()
