"""Files of a home that hold users' data are private to the home's owner (issue 18)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import boxlite


async def test_state_databases_are_private(home: Path) -> None:
    """state.db holds box options (env values: often secrets): mode 0600, and its WAL files too;
    an older home's world-readable database is fixed when opened."""
    (home / "state.db").touch(mode=0o644)
    os.chmod(home / "state.db", 0o644)
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=str(home)))
    try:
        await runtime.list_info()
        for path in home.rglob("*.db*"):
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
        assert (home / "state.db").exists()
    finally:
        await runtime.shutdown()
