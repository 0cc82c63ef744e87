"""``boxlite --ray ADDRESS VERB``: the CLI on the boxes of a real one-node Ray cluster
(``ray start --head`` with its own temp dir, port and BoxLite home), through ``Boxlite.ray``.

The cluster is started under a subreaper (``support/reaper.py``) and stopped by ending that
process's tree, never by ``ray stop``, which would end every Ray cluster of the machine."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import boxlite
from support.cli import Cli, assert_one_line_error
from support.hostprocs import free_port, processes_with_env
from support.reaper import Reaper

RAY = str(Path(sys.executable).with_name("ray"))


async def _remove_boxes(home: Path) -> None:
    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home)))
    try:
        for info in await rt.list_info():
            with contextlib.suppress(boxlite.BoxliteError):
                await rt.remove(info.id, force=True)
    finally:
        await rt.shutdown(timeout=2)


@pytest.fixture
def ray_head(cli: Cli) -> Iterator[str]:
    """A one-node Ray cluster on loopback whose node service keeps its boxes in a home of its own."""
    root = Path(tempfile.mkdtemp(prefix="blray"))  # short: Ray's socket paths must fit in 107 bytes
    home = root / "home"
    env = {**cli.env(), "BOXLITE_HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    address = f"127.0.0.1:{free_port()}"
    head = [
        RAY, "start", "--head", f"--port={address.rsplit(':', 1)[1]}", f"--temp-dir={root / 'tmp'}",
        "--include-dashboard=false", "--num-cpus=1", "--object-store-memory=100000000",
        "--node-ip-address=127.0.0.1", "--disable-usage-stats",
    ]  # fmt: skip
    mark = f"BOXLITE_HOME={home}".encode()
    reaper = Reaper()  # Ray's daemons and agents stay in its tree, whatever they rename themselves to
    try:
        rc, out = reaper.run(head, env, timeout=180)
        assert rc == 0, f"ray start failed: {out[-3000:]}"
        yield address
    finally:
        left = reaper.close()
        if (home / "state.db").exists():
            asyncio.run(_remove_boxes(home))
        left += processes_with_env(mark)
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"processes of the test's Ray cluster outlived it: {left}"


@pytest.mark.namespace_only
def test_verbs_through_a_ray_cluster(cli: Cli, ray_head: str) -> None:
    def ray(*args: str) -> subprocess.CompletedProcess[str]:
        return cli("--ray", ray_head, *args, timeout=180)

    def ok(*args: str) -> str:
        proc = ray(*args)
        assert proc.returncode == 0, (args, proc.returncode, proc.stdout, proc.stderr)
        return proc.stdout

    rootfs = str(cli.rootfs)
    proc = ray("run", "--rm", "--rootfs", rootfs, "sh", "-c", "echo from-the-cluster; exit 3")
    assert (proc.returncode, proc.stdout) == (3, "from-the-cluster\n")
    trapper = "trap 'echo usr1 >> /tmp/got' USR1; touch /tmp/ready; while :; do sleep 0.1; done"
    box_id = ok(
        "run", "-d", "--name", "far", "-e", "API_TOKEN=hunter2", "--rootfs", rootfs, "sh", "-c", trapper
    ).strip()
    assert cli.ok("ls", "-a", "-q") == ""  # not in the CLI's own home
    proc = ray("exec", "far", "sh", "-c", "echo in-box; exit 4")
    assert (proc.returncode, proc.stdout) == (4, "in-box\n")
    ls = ok("ls")
    assert box_id[-12:] in ls and "far" in ls and "running" in ls
    assert_one_line_error(ray("logs", "far"), 125, "needs a home on this machine")
    # kill -s USR1 reaches the main process through the node service; inspect shows command and env
    [insp] = json.loads(ok("inspect", "far"))
    assert insp["command"] == ["sh", "-c", trapper] and insp["env"]["API_TOKEN"] == "******"

    def until(check: str) -> None:
        for _ in range(100):
            if ray("exec", "far", "sh", "-c", check).returncode == 0:
                return
            time.sleep(0.2)
        raise AssertionError(f"never true in the box: {check}")

    until("test -e /tmp/ready")
    assert ok("kill", "-s", "USR1", "far").strip() == "far"
    until("grep -q usr1 /tmp/got")
    assert "running" in ok("ls")  # the trap handled it: the box goes on
    assert ok("exec", "-d", "far", "sh", "-c", "echo detached > /tmp/bg; sleep 600") == ""  # left running
    until("grep -q detached /tmp/bg")
    assert ok("kill", "far").strip() == "far"
    assert ok("rm", "far").strip() == "far"
    assert ok("ls", "-a", "-q") == ""
