"""An idle namespace box gives back its spawner's memory: the agent retires the spawner after
``$BOXLITE_SPAWNER_IDLE`` seconds (default 30) without a command, never while a process it
started runs, and the next command forks a new one (docs/performance.md, "idle memory")."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import boxlite

pytestmark = pytest.mark.namespace_only

SPAWNER_IDLE = 1.5


async def pids_become(box: boxlite.SimpleBox, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (await box.metrics()).pids != count:
        assert time.monotonic() < deadline, f"the box has {(await box.metrics()).pids} processes, not {count}"
        await asyncio.sleep(0.05)


async def test_idle_box_retires_its_spawner_and_the_next_command_gets_a_new_one(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOXLITE_SPAWNER_IDLE", str(SPAWNER_IDLE))
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


async def test_spawner_idle_zero_keeps_the_spawner_and_a_bad_value_is_refused(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOXLITE_SPAWNER_IDLE", "0")
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime) as box:
        assert (await box.exec("true")).exit_code == 0
        await asyncio.sleep(1.0)
        assert (await box.metrics()).pids == 2  # agent and spawner, kept
    box = await runtime.create(
        boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), network="disabled", auto_remove=False)
    )
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("BOXLITE_SPAWNER_IDLE", bad)
        with pytest.raises(boxlite.ConfigError, match="BOXLITE_SPAWNER_IDLE"):
            await box.start()
        assert not box.info().state.running  # nothing half-started
    monkeypatch.delenv("BOXLITE_SPAWNER_IDLE")
    await box.start()  # and the box is intact
    assert (await (await box.exec("echo", ["ok"])).stdout().read()) == "ok\n"
    await runtime.remove(box.id, force=True)
