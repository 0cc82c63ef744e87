"""httpx without its command-line client: the one place boxlite imports httpx from.

httpx's ``__init__`` imports ``httpx._main`` (its ``httpx`` console command) whenever click and
rich are installed, and boxlite's CLI installs both: every process that pulls an image or talks
to a server then loaded click, rich and pygments for nothing (~30 ms of a ~55 ms ``import httpx``
here; bench/bench_images.py's ``boxlite pull`` rows). While httpx loads, ``httpx._main`` is marked
missing, so its import fails the way httpx expects of a plain install (it then defines a ``main``
that says how to install the CLI). The mark is removed afterwards: an explicit ``import httpx._main``
later still works.
"""

from __future__ import annotations

import sys

_CLI = "httpx._main"

if "httpx" not in sys.modules and _CLI not in sys.modules:
    sys.modules[_CLI] = None  # type: ignore[assignment]  # None in sys.modules: "no such module"
    try:
        import httpx
    finally:
        if sys.modules.get(_CLI, False) is None:
            del sys.modules[_CLI]
else:
    import httpx

__all__ = ["httpx"]
