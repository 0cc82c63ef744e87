"""The start-up status line handshake (agent/protocol.py, engines/status.py) both engines use."""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest

from boxlite.agent import protocol as p
from boxlite.engines.status import read_status


def test_status_line_round_trip_folds_newlines() -> None:
    line = p.status_line(p.STATUS_ERROR, "mount failed:\nno such file")
    assert line == b"error mount failed: no such file\n" and line.count(b"\n") == 1
    assert p.parse_status(line) == p.StatusLine("error", "mount failed: no such file")
    assert p.parse_status(p.status_line(p.STATUS_READY)) == p.StatusLine("ready", "")
    assert p.parse_status(b"") == p.StatusLine("", "")  # EOF
    assert p.parse_status(b"ready \xff{}\n").arg == "\ufffd{}"  # undecodable bytes do not raise


async def read(lines: bytes, timeout: float = 5.0) -> tuple[p.StatusLine, dict[str, int]]:
    """What the reader makes of ``lines`` written by a process that then exits (pipe closed)."""
    r, w = os.pipe()

    def write() -> None:
        with contextlib.suppress(BrokenPipeError), open(w, "wb") as f:  # written while the reader reads
            f.write(lines)  # (the reader may stop early: a line over the limit)

    try:
        state: dict[str, int] = {}
        writer = asyncio.create_task(asyncio.to_thread(write))
        status = await asyncio.wait_for(read_status(r, state), timeout)
        await writer
        return status, state
    finally:
        os.close(r)


async def test_reader_returns_the_final_line_and_records_the_pid() -> None:
    status, state = await read(p.status_line("pid", "42") + p.status_line("ready", '{"a": 1}'))
    assert status == p.StatusLine("ready", '{"a": 1}') and state == {"pid": 42}
    status, state = await read(p.status_line("pid", "7") + p.status_line("template", "/t/x.snap"))
    assert status.word == "template" and state == {"pid": 7}


async def test_reader_reports_eof_errors_and_garbage() -> None:
    assert (await read(p.status_line("pid", "42")))[0].word == ""  # died before ready
    assert (await read(b"error boom\n"))[0] == p.StatusLine("error", "boom")
    assert (await read(b"pid 12x\n"))[0].word == "error"
    assert (await read(b"x" * (p.STATUS_LINE_MAX + 10) + b"\n"))[0] == p.StatusLine("error", "status line too long")


async def test_pid_is_known_when_the_deadline_passes() -> None:
    state: dict[str, int] = {}
    r, w = os.pipe()
    try:
        os.write(w, p.status_line("pid", "99"))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(read_status(r, state), 0.2)
        assert state == {"pid": 99}  # so the caller can kill what it started
    finally:
        os.close(r)
        os.close(w)
