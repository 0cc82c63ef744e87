"""The Ray cluster the tests of tests/cluster share (one per session: see raycluster.py)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from raycluster import COMMON, HEALTH, NODES, RAY, RayCluster, ray_pids, remove_boxes

from support.hostprocs import free_port


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    assert not ray_pids(), "a Ray cluster is already running on this machine"
    root = tmp_path_factory.mktemp("ray")
    c = RayCluster(f"127.0.0.1:{free_port()}", root, [root / f"home{i}" for i in range(NODES)])
    head = [
        RAY, "start", "--head", f"--port={c.address.rsplit(':', 1)[1]}", "--include-dashboard=false",
        f"--temp-dir={root / 'tmp'}", f"--resources={json.dumps({'boxlite_n0': 1})}",
        f"--system-config={json.dumps(HEALTH)}", *COMMON,
    ]  # fmt: skip
    try:
        subprocess.run(head, env=c.env(0), check=True, capture_output=True, timeout=180)
        for i in range(1, NODES):
            c.start_worker(i)
        yield c
    finally:
        with contextlib.suppress(Exception):
            import ray

            ray.shutdown()
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)
        remove_boxes(c.homes)
        deadline = time.monotonic() + 30
        while (ray_pids() or c.started_here()) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = ray_pids() + c.started_here()
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not left, f"Ray processes or boxes outlived the test: {left}"
