"""Byte limits on every path a box, a guest agent or a REST client can push data through
(issue 18, items 7-9): each test reproduces the attack and checks that it is now bounded."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import boxlite
from support.cli import Cli

LOG_CAP = 256 * 1024


async def test_main_process_printing_fast_stays_within_the_log_cap(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A main process printing as fast as it can for seconds: run/main.log never passes the cap
    (BOXLITE_LOG_MAX_BYTES), the older output is in main.log.1, and ``boxlite logs`` shows both."""
    monkeypatch.setenv("BOXLITE_LOG_MAX_BYTES", str(LOG_CAP))
    line = "0123456789" * 10
    opts = boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), cmd=["yes", line], auto_remove=False)
    box = await runtime.create(opts)
    await box.start()
    run = runtime.home.box_dir(box.id) / "run"
    log, old = run / "main.log", run / "main.log.1"
    largest = 0
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        for path in (log, old):
            if path.exists():
                largest = max(largest, path.stat().st_size)
        await asyncio.sleep(0.05)
    assert old.exists(), "the box printed more than the cap: the log was rotated"
    await box.stop()
    assert largest <= LOG_CAP and log.stat().st_size <= LOG_CAP and old.stat().st_size <= LOG_CAP
    assert not (run / "main.log.2").exists()
    out = Cli(runtime.home.root, busybox_rootfs, engine)("logs", box.id)
    assert out.returncode == 0, out.stderr
    expected = old.read_bytes() + log.read_bytes()
    assert out.stdout.encode() == expected
    assert set(expected.splitlines()[1:-1]) == {line.encode()}  # whole lines, from both files
    await runtime.remove(box.id, force=True)
