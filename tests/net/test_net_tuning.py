"""Issue 12: the namespace engine tunes each box's own network namespace for pasta (its receive
window bounds what this pasta re-reads per frame: docs/network.md, "Cost"; no duplicate address
detection, whose ``::``-sourced solicitation misled Debian 12's pasta), never the host's."""

from __future__ import annotations

import asyncio
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


async def test_the_box_never_sends_from_the_unspecified_ipv6_address(box: boxlite.SimpleBox) -> None:
    """Duplicate address detection would send a neighbour solicitation from ``::`` up to ~1 s
    after the box's interface came up; Debian 12's pasta then sent the segments of the box's open
    IPv6 connections to ``::`` (engines/namespace/network.py). An idle box has nobody to solicit."""
    await asyncio.sleep(2.5)  # past the detection's random delay (at most 1 s) and its 1 s probe
    r = await box.exec("cat", "/proc/net/snmp6")
    counters = dict(line.split()[:2] for line in r.stdout.splitlines() if len(line.split()) >= 2)
    assert counters["Icmp6OutNeighborSolicits"] == "0", r.stdout
