"""Issue 12: the namespace engine tunes each box's own network namespace for pasta (its receive
window bounds what this pasta re-reads per frame: docs/network.md, "Cost"), never the host's."""

from __future__ import annotations

from pathlib import Path

import pytest

import boxlite
from boxlite.engines.namespace import network

pytestmark = pytest.mark.namespace_only


def read_sysctl(key: str) -> str:
    return " ".join(Path("/proc/sys", key).read_text().split())


async def test_box_netns_gets_the_engine_sysctls_and_the_host_keeps_its_own(box: boxlite.SimpleBox) -> None:
    host = {k: read_sysctl(k) for k in network.NETNS_SYSCTLS}
    assert host != network.NETNS_SYSCTLS, "the host has the boxes' values already: nothing to tell apart"
    r = await box.exec("cat", *(f"/proc/sys/{k}" for k in network.NETNS_SYSCTLS))
    assert r.exit_code == 0, r.stderr
    assert [" ".join(line.split()) for line in r.stdout.splitlines()] == list(network.NETNS_SYSCTLS.values())
    assert {k: read_sysctl(k) for k in network.NETNS_SYSCTLS} == host
