"""The Ray cluster the tests of tests/cluster share (one per session: see raycluster.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from raycluster import COMMON, HEALTH, NODES, RAY, RayCluster, ray_pids, remove_boxes

import boxlite
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
        done = subprocess.run(head, env=c.env(0), capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, f"ray start of the head failed: {(done.stdout + done.stderr)[-3000:]}"
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


LEFTOVER_REMOVAL_SECS = 60.0


@pytest.fixture(autouse=True)
async def no_box_outlives_its_test(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Remove, through the cluster, whatever boxes a test that used it left behind (one that failed
    halfway): the nodes have one CPU each, so a leftover would fail every later test's placement."""
    yield
    if "cluster" not in request.fixturenames:
        return
    cluster: RayCluster = request.getfixturevalue("cluster")
    rt = cluster.runtime("namespace")  # the tests of the cluster are namespace-only

    async def remove_all() -> None:
        try:
            infos = await rt.list_info()
        except boxlite.BoxliteError:  # a node is lost: its boxes go at the session's end
            return
        for info in infos:
            with contextlib.suppress(boxlite.BoxliteError):
                await rt.remove(info.id, force=True)

    try:
        await asyncio.wait_for(remove_all(), LEFTOVER_REMOVAL_SECS)
    finally:
        await rt.shutdown(timeout=2)
