"""An idle namespace box gives back its spawner's memory: the agent retires the spawner after
``SPAWNER_IDLE`` seconds without a command, never while a process it started runs, and the next
command forks a new one (docs/performance.md, "idle memory")."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import boxlite
from boxlite.agent.nsboot import SPAWNER_IDLE

pytestmark = pytest.mark.namespace_only


async def pids_become(box: boxlite.SimpleBox, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (await box.metrics()).pids != count:
        assert time.monotonic() < deadline, f"the box has {(await box.metrics()).pids} processes, not {count}"
        await asyncio.sleep(0.05)


async def test_idle_box_retires_its_spawner_and_the_next_command_gets_a_new_one(
    runtime: boxlite.Boxlite, busybox_rootfs: Path
) -> None:
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime) as box:
        long = await box.box.exec("sh", ["-c", f"sleep {SPAWNER_IDLE + 1.5}; echo done"], stdin=False)
        await asyncio.sleep(SPAWNER_IDLE + 0.5)
        assert (await box.metrics()).pids == 4  # agent, spawner, sh, sleep: kept while its process runs
        assert await asyncio.wait_for(long.stdout().read(), 10) == "done\n"
        assert (await asyncio.wait_for(long.wait(), 10)).exit_code == 0

        await pids_become(box, 1, SPAWNER_IDLE + 5)  # the agent alone
        first = await box.exec("sh", "-c", "echo $$; echo err >&2; exit 3")
        assert first.exit_code == 3 and first.stdout.strip().isdigit() and first.stderr == "err\n"
        assert (await box.metrics()).pids == 2  # a new spawner
        assert (await box.exec("echo", "again")).stdout == "again\n"
