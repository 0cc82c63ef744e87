"""A VM template is restored only where it was made: same runtime files, VM shape, QEMU and host
CPU (a guest restored on another CPU keeps the first one's TSC calibration and, under KVM, its
CPU features)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from vmhelpers import requires_qemu

from boxlite.engines.vm import templates

pytestmark = [requires_qemu]


def _key(**vm: Any) -> str:
    artifact: Any = SimpleNamespace(manifest={"files": {"vmlinux": "sha256:1"}})
    shape: Any = SimpleNamespace(**{"accel": "tcg", "cpus": 1, "memory_mib": 512, "debug": False, **vm})
    return templates.template_key(artifact, shape, 1 << 30)


def test_the_key_follows_the_host_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    here = _key()
    assert _key() == here  # stable on one host
    assert _key(memory_mib=1024) != here
    monkeypatch.setattr(templates, "host_cpu_identity", lambda: "Another CPU|0123456789abcdef|300")
    assert _key() != here


def test_the_cpu_identity_ignores_small_frequency_wander(monkeypatch: pytest.MonkeyPatch) -> None:
    templates.host_cpu_identity.cache_clear()
    monkeypatch.setattr(templates, "host_tsc_khz", lambda: 2_599_998)
    first = templates.host_cpu_identity()
    templates.host_cpu_identity.cache_clear()
    monkeypatch.setattr(templates, "host_tsc_khz", lambda: 2_600_020)
    assert templates.host_cpu_identity() == first
    templates.host_cpu_identity.cache_clear()
    monkeypatch.setattr(templates, "host_tsc_khz", lambda: 3_100_000)
    assert templates.host_cpu_identity() != first
    templates.host_cpu_identity.cache_clear()
