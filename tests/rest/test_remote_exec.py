"""Every test of tests/core/test_exec.py, run through a server with ``RemoteBoxlite``.

The ``box`` fixture of tests/rest/conftest.py makes them use a remote ``SimpleBox``.
"""

from __future__ import annotations

import boxlite
from boxlite.remote import RemoteBox
from core.test_exec import *  # noqa: F403


def test_these_tests_really_go_through_the_server(box: boxlite.SimpleBox) -> None:
    assert isinstance(box.box, RemoteBox)
