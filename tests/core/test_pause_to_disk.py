"""box.pause(to_disk=True): the VM engine saves the guest's memory in the box's dir and ends
its processes; the box survives the end of the process that paused it, and another process
resumes it with a counter in memory going on from its value. The namespace engine would need
CRIU, which does not work on every kernel: then the pause is refused, saying why."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import boxlite
from boxlite.errors import InvalidStateError, UnsupportedOptionError

SRC = Path(__file__).resolve().parents[2] / "src"
COUNTER = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.05; done"

OWNER = textwrap.dedent(
    """
    import asyncio, json, sys
    import boxlite

    async def main(home, rootfs):
        rt = boxlite.Boxlite(boxlite.Options(home_dir=home, engine="vm"))
        box = await rt.create(boxlite.BoxOptions(rootfs_path=rootfs, auto_remove=False))
        await box.start()
        ex = await box.exec("sh", ["-c", "(COUNTER) </dev/null >/dev/null 2>&1 &"])
        await ex.wait()
        count = 0
        for _ in range(600):
            ex = await box.exec("cat", ["/tmp/count"], stdin=False)
            out = (await ex.stdout().read()).strip()
            await ex.wait()
            if out.isdigit() and int(out) >= 3:
                count = int(out)
                break
            await asyncio.sleep(0.1)
        await box.pause(to_disk=True)
        print(json.dumps({"id": box.id, "count": count, "state": box.info().state.status}), flush=True)
        await rt.shutdown()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
).replace("COUNTER", COUNTER)


async def read_count(box: boxlite.Box) -> int:
    ex = await box.exec("cat", ["/tmp/count"], stdin=False)
    out = await ex.stdout().read()
    assert (await ex.wait()).exit_code == 0
    return int(out.strip())


@pytest.mark.namespace_only
async def test_namespace_to_disk_is_refused_with_criu_reason(box: boxlite.SimpleBox) -> None:
    await box.exec("true")
    with pytest.raises(UnsupportedOptionError, match="criu"):
        await box.box.pause(to_disk=True)
    assert box.box.info().state.status == "running"
    assert (await box.exec("echo", "still")).stdout == "still\n"


async def test_vm_to_disk_survives_the_host_process(home: Path, busybox_rootfs: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", OWNER, str(home), str(busybox_rootfs)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["state"] == "paused" and report["count"] >= 3
    box_dir = home / "boxes" / report["id"]
    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine="vm"))
    try:
        box = await rt.get(report["id"])
        assert box is not None
        info = box.info()
        assert info.state.status == "paused" and not info.state.running
        assert not any(p.name.startswith("vm-saved") and p.suffix == ".tmp" for p in box_dir.rglob("*"))
        with pytest.raises(InvalidStateError, match="paused"):
            await box.exec("true")
        await asyncio.sleep(4)  # the guest's clock stands still meanwhile
        t0 = time.monotonic()
        await box.resume()
        resumed_in = time.monotonic() - t0
        ex = await box.exec("date", ["+%s"], stdin=False)
        guest_now = int((await ex.stdout().read()).strip())
        assert abs(guest_now - time.time()) < 2.5  # set again from the host's at resume
        assert box.info().state.status == "running"
        first = await read_count(box)
        assert first >= report["count"], (first, report)  # went on from its value, not from 1
        await asyncio.sleep(0.5)
        assert await read_count(box) > first  # and keeps counting
        assert not list(box_dir.rglob("vm-saved*")), "the saved state is deleted once the box runs"
        assert resumed_in < 60
        # and once more, from this process: paused in memory first, then to disk, resume
        await box.pause()
        await box.pause(to_disk=True)
        assert box.info().state.status == "paused"
        await box.resume()
        assert await read_count(box) >= first
        await box.pause(to_disk=True)
        await box.stop()  # a box paused to disk stops without running
        assert box.info().state.status == "stopped"
        assert not list(box_dir.rglob("vm-saved*"))
        # what a save killed half-way leaves is deleted by the next start (it is obsolete then)
        (box_dir / "run" / "vm-saved.state.tmp").write_bytes(b"x" * 4096)
        await box.start()
        assert not list(box_dir.rglob("vm-saved*"))
    finally:
        await rt.remove(report["id"], force=True)
        await rt.shutdown()
