"""Fixtures of the network tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def python_rootfs() -> Path:
    """The Debian python rootfs (cached on disk across runs): the probes run Python in the box."""
    from support.images import python_rootfs as build

    return build()
