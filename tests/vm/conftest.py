"""Fixtures for the VM engine tests: the runtime artifact, a home, a started box."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from vmhelpers import make_spec, shutdown

from boxlite import runtime_artifact
from boxlite.engines.base import BoxSpec, RunningBox
from boxlite.engines.vm import VmEngine

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def artifact() -> runtime_artifact.RuntimeArtifact:
    """The repo's artifact, (re)built by runtime/build.py: a no-op when inputs are unchanged."""
    subprocess.run([sys.executable, str(REPO / "runtime" / "build.py")], check=True)
    return runtime_artifact.verify(REPO / "target" / "boxlite-runtime")


@pytest.fixture
def vm_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / "boxes").mkdir(parents=True)
    return home


@pytest.fixture
async def started(
    artifact: runtime_artifact.RuntimeArtifact, vm_home: Path, busybox_rootfs: Path
) -> AsyncIterator[tuple[VmEngine, BoxSpec, RunningBox]]:
    engine = VmEngine()
    spec = make_spec(vm_home, busybox_rootfs)
    running = await engine.start(spec)
    try:
        yield engine, spec, running
    finally:
        await shutdown(spec, running, engine)
