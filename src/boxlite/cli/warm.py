"""``boxlite run``: start the namespace zygote while the runtime is still being imported.

The CLI knows from its arguments that it will start a box long before the runtime is loaded;
:func:`boxlite.api.prestart.prestart_engine` lets the zygote's interpreter load in parallel.
"""

from __future__ import annotations

from collections.abc import Sequence


def engine_arg(args: Sequence[str]) -> str | None:
    """The value of ``--engine`` among the verb's arguments, up to a ``--`` (a later mention in
    the box's command may be misread: that only costs a useless or a missed pre-start)."""
    for i, arg in enumerate(args):
        if arg == "--":
            return None
        if arg == "--engine" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--engine="):
            return arg.partition("=")[2]
    return None


def prewarm(args: Sequence[str], home: str | None) -> None:
    """Pre-start what ``boxlite run ARGS`` will need first (not for ``--help``)."""
    if "-h" in args or "--help" in args:
        return
    from ..api.prestart import prestart_engine

    prestart_engine(engine_arg(args), home)
