"""Where a runtime's home is, for front-ends that need it before a runtime exists (e.g. the
socket path of `boxlite serve`)."""

from __future__ import annotations

import os
from pathlib import Path

from ..runtime.home import Home


def resolve_home(home_dir: str | os.PathLike[str] | None) -> Path:
    """The home directory ``Boxlite(Options(home_dir=...))`` would use (created if missing)."""
    return Home.resolve(home_dir).root
