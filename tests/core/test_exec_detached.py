"""``Box.exec_detached`` (``boxlite exec -d``, docker's ``exec -d``): a command left running in the
box, nobody reading it; its output goes to the box's capped ``exec.log``. Both engines; over REST
in tests/rest/test_rest_signal.py, from the CLI in tests/cli/test_cli_run.py."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import boxlite


async def run(box: boxlite.Box, *argv: str) -> tuple[int, str]:
    execution = await box.exec(argv[0], list(argv[1:]), stdin=False)
    out = await execution.stdout().read()
    return (await execution.wait()).exit_code, out


async def until(box: boxlite.Box, script: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while (await run(box, "sh", "-c", script))[0] != 0:
        assert time.monotonic() < deadline, f"never true in the box: {script}"
        await asyncio.sleep(0.2)


async def test_a_detached_command_goes_on_after_the_call_and_its_output_is_logged(
    runtime: boxlite.Boxlite, busybox_rootfs: Path
) -> None:
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=False))
    await box.start()
    script = "echo out; echo err >&2; echo $GREETING in $(pwd); sleep 1; echo later > /later; exec sleep 300"
    pid = await box.exec_detached("sh", ["-c", script], env={"GREETING": "hi"}, cwd="/tmp")
    assert pid > 0
    await until(box, "test -s /later")
    assert await run(box, "sh", "-c", f"kill -0 {pid} && cat /later") == (0, "later\n")
    log = runtime.home.layout(box.id).exec_log
    deadline = time.monotonic() + 10
    while sorted(log.read_text().split("\n")) != ["", "err", "hi in /tmp", "out"]:
        assert time.monotonic() < deadline, log.read_text()
        await asyncio.sleep(0.1)
    await box.stop()  # the stop ends it with the box's other processes
    await box.start()
    assert (await run(box, "sh", "-c", "ps -o args | grep -c '^sleep 300'"))[1].strip() == "0"
    await runtime.remove(box.id, force=True)


async def test_a_chatty_detached_command_never_blocks_and_its_log_stays_capped(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody reads its output: were credit not granted as the log is written, the command
    would stop at the first window; the log keeps at most twice the cap on disk."""
    cap = 256 * 1024
    monkeypatch.setenv("BOXLITE_LOG_MAX_BYTES", str(cap))
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=False))
    await box.start()
    for n in range(3):  # three writers of one exec.log share its cap
        script = f"head -c 2000000 /dev/zero | tr '\\0' {n}; touch /done{n}; exec sleep 300"
        await box.exec_detached("sh", ["-c", script])
    await until(box, "test -e /done0 -a -e /done1 -a -e /done2", timeout=120)
    log = runtime.home.layout(box.id).exec_log
    rotated = log.with_name(log.name + ".1")
    assert 0 < log.stat().st_size <= cap and 0 < rotated.stat().st_size <= cap
    await runtime.remove(box.id, force=True)


async def test_a_detached_command_that_cannot_start_is_an_error(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=False))
    await box.start()
    with pytest.raises(boxlite.ExecError, match="nope"):
        await box.exec_detached("nope")
    assert await run(box, "true") == (0, "")
    await runtime.remove(box.id, force=True)
