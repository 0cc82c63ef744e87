"""A real Ray cluster of three nodes on this machine (tests/cluster/conftest.py starts it).

A head and two workers started with ``ray start`` (one CPU each, 100 MB object stores, no
dashboard, loopback only), each node with its own BoxLite home through ``BOXLITE_HOME`` (its node
service inherits it). Teardown stops every Ray process (``ray stop --force``), removes every box
of every home, and fails if a Ray process or a box (found by its inherited ``BOXLITE_HOME``)
outlived it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import boxlite
from support.hostprocs import processes_with_env

RAY = str(Path(sys.executable).with_name("ray"))
NODES = 3
COMMON = ["--num-cpus=1", "--object-store-memory=100000000", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
HEALTH = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3, "health_check_timeout_ms": 1000}


def ray_pids() -> list[int]:
    """Processes of a Ray installation's binaries or workers."""
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                if b"site-packages/ray/" in cmd or cmd.startswith(b"ray::"):
                    pids.append(int(pid))
    return pids


@dataclass
class RayCluster:
    address: str
    root: Path
    homes: list[Path]

    def env(self, i: int) -> dict[str, str]:
        env = dict(os.environ, BOXLITE_HOME=str(self.homes[i]), RAY_USAGE_STATS_ENABLED="0")
        env.pop("RAY_ADDRESS", None)
        return env

    def start_worker(self, i: int) -> None:
        """Start (or restart) worker ``i`` with its home and its resource ``boxlite_n<i>``."""
        cmd = [RAY, "start", f"--address={self.address}", f"--resources={json.dumps({f'boxlite_n{i}': 1})}", *COMMON]
        done = subprocess.run(cmd, env=self.env(i), capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, f"ray start of worker {i} failed: {(done.stdout + done.stderr)[-3000:]}"

    def runtime(self, engine: str, **options: object) -> boxlite.Boxlite:
        """A driver-side runtime with short deadlines (a lost node shows within seconds)."""
        deadlines: dict[str, object] = {"call_timeout": 30.0, "ping_interval": 2.0, "ping_timeout": 5.0}
        return boxlite.Boxlite.ray(self.address, engine=engine, **{**deadlines, **options})

    def started_here(self) -> list[int]:
        """Processes whose environment names one of the homes: Ray's and the boxes' (they inherit it)."""
        return processes_with_env(f"BOXLITE_HOME={self.root}/".encode())

    @staticmethod
    def raylet_pid(node_id: str) -> int:
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                with contextlib.suppress(OSError):
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                    if cmd and cmd[0].endswith(b"/raylet") and f"--node_id={node_id}".encode() in cmd:
                        return int(pid)
        raise AssertionError(f"no raylet for node {node_id}")


def remove_boxes(homes: list[Path]) -> None:
    """Remove every box of every home (the node services are gone by now)."""

    async def clean(home: Path) -> None:
        rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home)))
        try:
            for info in await rt.list_info():
                with contextlib.suppress(boxlite.BoxliteError):
                    await rt.remove(info.id, force=True)
            assert await rt.list_info() == []
        finally:
            await rt.shutdown(timeout=2)

    for home in homes:
        if (home / "state.db").exists():
            asyncio.run(clean(home))
