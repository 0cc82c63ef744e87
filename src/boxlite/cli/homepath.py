"""Which home the CLI uses: ``--home``, ``$BOXLITE_HOME``, else ``~/.boxlite``.

One definition for the lean ``exec`` path (cli/fastexec.py, which imports nothing heavy) and the
stored logins (cli/credentials.py): both must name the same home."""

from __future__ import annotations

import os


def home_root(home: str | None) -> str:
    """The home's absolute path (not checked: callers decide what a sound home is)."""
    chosen = home or os.environ.get("BOXLITE_HOME") or os.path.join(os.path.expanduser("~"), ".boxlite")
    return os.path.abspath(os.path.expanduser(chosen))
