"""Deadlines go through ``boxlite.aio.within``: Python 3.11's ``asyncio.wait_for`` loses a
cancellation that arrives with the result (a Ray upload hung forever on it), so a new
``asyncio.wait_for`` in the package is a regression this test names."""

from __future__ import annotations

import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "boxlite"
CALL = re.compile(r"\bwait_for\(")


def test_no_asyncio_wait_for_outside_aio() -> None:
    found = [
        f"{path.relative_to(PKG)}:{n}: {line.strip()}"
        for path in sorted(PKG.rglob("*.py"))
        if path.name != "aio.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if CALL.search(line) and not line.lstrip().startswith("#")
    ]
    assert found == [], "use boxlite.aio.within, not asyncio.wait_for:\n" + "\n".join(found)
