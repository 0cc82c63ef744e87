"""The ``boxlite`` console script: ``exec`` in its common form and ``--version`` answered before
click, asyncio and the SDK are imported (cli/fastexec.py); everything else is cli/main.py."""

from __future__ import annotations

import os
import sys


def main() -> None:
    args, home = sys.argv[1:], None
    if args[:1] == ["--home"] and len(args) > 1:
        args, home = args[2:], args[1]
    elif args[:1] and args[0].startswith("--home="):
        args, home = args[1:], args[0].partition("=")[2]
    if args[:1] == ["exec"] and home != "":
        try:
            from .fastexec import try_exec

            code = try_exec(args[1:], home)
        except KeyboardInterrupt:  # before the command started (then signals are forwarded): as cli/main.py
            sys.exit(130)
        if code is not None:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (BrokenPipeError, ValueError):
                    pass
            os._exit(code)  # nothing is left to clean up: skip finalisation (~3 ms of a ~33 ms process)
    elif args == ["--version"]:
        from .. import __version__

        sys.stdout.write(f"boxlite, version {__version__}\n")
        sys.exit(0)
    from .main import main as full

    full()
