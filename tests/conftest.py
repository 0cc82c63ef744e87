"""Shared fixtures: a busybox root filesystem, a private runtime home, a runtime."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import boxlite
from support.images import build_busybox_rootfs


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with busybox-static and a minimal /etc (root + user 1000)."""
    return build_busybox_rootfs(tmp_path_factory.mktemp("rootfs") / "busybox")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


TESTS_DIR = Path(__file__).resolve().parent
# Ray's processes are machine-wide (the cluster fixture refuses to start beside another cluster)
# and its nodes' health checks give up after ~3 s without an answer: the tests that start Ray are
# marked ``ray`` and scripts/test.sh runs them in a pytest of their own, alone on the machine.
RAY_TESTS = ("cluster/", "cli/test_cli_ray.py", "build/test_bench_cluster_smoke.py")

ENGINES = [e for e in os.environ.get("BOXLITE_TEST_ENGINES", "namespace").split(",") if e]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests taking ``engine`` (directly or through ``runtime``/``box``) run once per engine in
    BOXLITE_TEST_ENGINES (default: namespace). Tests of namespace-engine internals (cgroups,
    uid shifting, host-side files) are marked ``namespace_only`` and run on that engine alone;
    the VM engine's own checks live in tests/vm."""
    if "engine" in metafunc.fixturenames:
        engines = ENGINES
        if metafunc.definition.get_closest_marker("namespace_only"):
            engines = ["namespace"]
        metafunc.parametrize("engine", engines)


@pytest.fixture
async def runtime(home: Path, engine: str) -> AsyncIterator[boxlite.Boxlite]:
    rt = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine=engine))
    yield rt
    await rt.shutdown(timeout=2)


@pytest.fixture
async def box(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> AsyncIterator[boxlite.SimpleBox]:
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime) as b:
        yield b


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist turns xdist_group marks into node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist's ``--dist loadgroup`` (scripts/test.sh), a test file runs on one worker,
    so its module and session fixtures (registries, built images) start once per file rather
    than once per worker; the Ray tests are one group (one cluster) and marked ``ray``. Files
    marked ``slow`` come first (scripts/test.sh keeps this order: ``--no-loadscope-reorder``), so
    that the longest ones (a browser in a VM under TCG: ~10 min) do not start when the other worker
    is nearly done."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: files stay whole
    for item in items:
        rel = item.path.relative_to(TESTS_DIR).as_posix()
        if rel.startswith(RAY_TESTS):
            item.add_marker(pytest.mark.ray)
            item.add_marker(pytest.mark.xdist_group("ray"))
        else:
            item.add_marker(pytest.mark.xdist_group(rel))
