"""A cancelled or timed-out exec start: the caller sees it cancelled, and the agent is told to kill
what it may have started (nobody would read that process or end its stdin: an upload's untar would
wait forever)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from boxlite import errors
from boxlite.agent import protocol as p
from boxlite.client.agent_client import AgentClient
from support.scripted_agent import scripted_agent


async def _silent_agent(path: Path, seen: list[tuple[int, int, bytes]]) -> asyncio.Server:
    """Records every frame, answers none."""

    async def record(_writer: asyncio.StreamWriter, kind: int, channel: int, payload: bytes) -> None:
        seen.append((kind, channel, payload))

    return await scripted_agent(path, record)


async def _kill_sent(seen: list[tuple[int, int, bytes]], channel: int) -> bool:
    for _ in range(200):
        if any(k == p.CONTROL and c == channel and p.decode_json(b) == {"op": "kill"} for k, c, b in seen):
            return True
        await asyncio.sleep(0.01)
    return False


async def test_a_cancellation_that_coincides_with_the_answer_is_not_lost(tmp_path: Path) -> None:
    seen: list[tuple[int, int, bytes]] = []
    async with await _silent_agent(tmp_path / "a.sock", seen):
        client = await AgentClient.connect(tmp_path / "a.sock")
        start = asyncio.ensure_future(client.exec({"argv": ["sleep", "1000"]}, "sleep"))
        while not client._pending:  # the request is out
            await asyncio.sleep(0)
        ((channel, answer),) = client._pending.items()
        answer.set_result({"ok": True, "pid": 7})  # the answer arrives...
        start.cancel()  # ...in the same step as the cancellation
        with pytest.raises(asyncio.CancelledError):  # wait_for (Python 3.11) returned the channel here
            await start
        assert await _kill_sent(seen, channel)
        await client.close()


@pytest.mark.parametrize("how", ["cancelled", "timed out"])
async def test_an_exec_start_given_up_kills_what_it_started(tmp_path: Path, how: str) -> None:
    seen: list[tuple[int, int, bytes]] = []
    async with await _silent_agent(tmp_path / "a.sock", seen):
        client = await AgentClient.connect(tmp_path / "a.sock")
        if how == "timed out":
            with pytest.raises(errors.AgentTimeoutError):
                await client.exec({"argv": ["sleep", "1000"]}, "sleep", timeout=0.2)
        else:
            start = asyncio.ensure_future(client.exec({"argv": ["sleep", "1000"]}, "sleep"))
            await asyncio.sleep(0.1)
            start.cancel()
            with pytest.raises(asyncio.CancelledError):
                await start
        ((_, channel, _),) = [f for f in seen if f[0] == p.REQUEST]
        assert await _kill_sent(seen, channel)
        await client.close()


async def test_an_exec_that_started_is_not_killed(tmp_path: Path) -> None:
    seen: list[tuple[int, int, bytes]] = []

    async def answer(writer: asyncio.StreamWriter, kind: int, channel: int, payload: bytes) -> None:
        seen.append((kind, channel, payload))
        if kind == p.REQUEST:
            writer.write(p.encode_json(p.RESPONSE, channel, {"ok": True, "pid": 7}))
            await writer.drain()

    async with await scripted_agent(tmp_path / "a.sock", answer):
        client = await AgentClient.connect(tmp_path / "a.sock")
        ch = await client.exec({"argv": ["sleep", "1000"]}, "sleep")
        assert ch.pid == 7
        assert not await _kill_sent(seen, ch.channel)
        await client.close()
