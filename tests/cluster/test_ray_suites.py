"""The engine-agnostic exec and copy tests (tests/core/test_exec.py, test_copy.py), run against
boxes placed on the Ray cluster: the same behaviour through ``Boxlite.ray`` as locally."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from raycluster import RayCluster

import boxlite
from core import test_copy, test_exec

pytestmark = [pytest.mark.namespace_only, pytest.mark.timeout(300)]


@pytest.fixture
async def runtime(cluster: RayCluster, engine: str) -> AsyncIterator[boxlite.Boxlite]:
    """Overrides tests/conftest.py's: the ``box`` fixture then creates its box on the cluster."""
    rt = cluster.runtime(engine)
    yield rt
    await rt.shutdown(timeout=2)


host_tree = test_copy.host_tree
globals().update(
    {name: fn for mod in (test_exec, test_copy) for name, fn in vars(mod).items() if name.startswith("test_")}
)
