"""``boxlite ls`` and ``inspect`` show a box's health, read from the home by another process."""

from __future__ import annotations

import asyncio
import json
import time

import boxlite
from support.cli import Cli


async def test_ls_and_inspect_show_health(cli: Cli) -> None:
    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(cli.home), engine=cli.engine))
    check = boxlite.HealthCheckOptions(interval=0.2, timeout=10, start_period=0, command=["true"])  # type: ignore[arg-type]
    opts = boxlite.BoxOptions(rootfs_path=str(cli.rootfs), advanced=boxlite.AdvancedBoxOptions(health_check=check))
    try:
        box = await rt.create(opts, name="checked")
        await box.start()
        deadline = time.monotonic() + 60
        while not (await rt.get_info(box.id)).health_status.state.is_healthy():  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        listing = await asyncio.to_thread(cli.ok, "ls")
        row = next(line for line in listing.splitlines() if "checked" in line)
        assert "running (healthy)" in row
        data = json.loads(await asyncio.to_thread(cli.ok, "inspect", "checked"))[0]
        health = data["health_status"]
        assert health["state"]["value"] == "healthy" and health["checking"] and health["log"][-1]["exit_code"] == 0
    finally:
        await rt.shutdown(timeout=2)
