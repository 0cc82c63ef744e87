"""A box's wall clock is the host's, from its first command on: build tools compare the times of
files written in the box with the host's, and logs from both sides are merged by time. A VM box
restored from its template starts with the template's stale clock and must be set from the host."""

from __future__ import annotations

import asyncio
import time

import boxlite

FILE_TIME_SLACK = 0.05
"""File times come from the kernel's coarse clock (up to a tick, 10 ms at HZ=100, behind)."""


async def guest_time(box: boxlite.SimpleBox) -> tuple[float, float, float]:
    """(host time before, the box's time, host time after) of one command that stamps a file."""
    before = time.time()
    out = await box.exec("sh", "-c", "touch /tmp/now && stat -c '%Y %y' /tmp/now")
    after = time.time()
    assert out.exit_code == 0, out.stderr
    seconds, _, clock, _ = out.stdout.split()  # "1796516637 2026-12-06 00:17:17.123456789 +0000"
    return before, int(seconds) + float("0." + clock.partition(".")[2]), after


async def test_the_box_clock_is_the_hosts_from_the_first_command(box: boxlite.SimpleBox) -> None:
    samples = [await guest_time(box)]
    for _ in range(2):
        await asyncio.sleep(0.5)
        samples.append(await guest_time(box))
    for before, stamped, after in samples:
        assert before - FILE_TIME_SLACK <= stamped <= after + FILE_TIME_SLACK, (
            f"the box's clock is {stamped - before:+.3f}..{stamped - after:+.3f} s off the host's"
        )
