"""A host directory tree as plain data, to compare what a copy left behind."""

from __future__ import annotations

import os
from pathlib import Path


def tree(root: Path) -> dict[str, str]:
    """relative path -> content ('<dir>', '-> target' for links) of everything under root."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "<dir>"
            else:
                out[rel] = p.read_text(errors="replace")
    return out
