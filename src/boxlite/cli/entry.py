"""The ``boxlite`` console script: ``exec`` in its common form and ``--version`` answered before
click, asyncio and the SDK are imported (cli/fastexec.py); everything else is cli/main.py,
after which the process leaves without the interpreter's teardown (:func:`leave`)."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not from typing: `boxlite exec`'s lean path imports nothing it can avoid
if TYPE_CHECKING:
    from typing import NoReturn


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

    try:
        full()
    except SystemExit as e:
        leave(e.code)
    leave(0)


def leave(code: object) -> NoReturn:
    """Exit as the interpreter does (non-daemon threads joined, atexit handlers run, standard
    streams flushed, ``sys.exit``'s meaning of ``code``) but without tearing down the modules
    and objects a full command loaded: that deallocation took ~35 ms of every ``boxlite run``."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code & 0xFF
    else:
        print(code, file=sys.stderr)
        status = 1
    import atexit

    threading = sys.modules.get("threading")
    if threading is not None:
        getattr(threading, "_shutdown", lambda: None)()  # joins threads; runs concurrent.futures' exit hooks
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):
            pass
    os._exit(status)
