"""Global options written after the verb (``boxlite ls --home DIR``), as BoxLite's CLI takes them.

click reads a group's options only before the verb. :func:`hoist` moves the group's options that
appear among the verb's own arguments in front of the verb, where click reads them; it stops
where the verb's own parsing would: at ``--``, and at the first positional argument of a verb
that takes a command line (``run``/``exec``/``create``: ``allow_interspersed_args=False``), so a
``--home`` meant for the boxed command stays the boxed command's. An option the verb defines
itself keeps the verb's meaning.
"""

from __future__ import annotations

import click


def _names(params: list[click.Parameter]) -> dict[str, bool]:
    """Option name → whether it takes a value."""
    out: dict[str, bool] = {}
    for p in params:
        if isinstance(p, click.Option):
            for name in (*p.opts, *p.secondary_opts):
                out[name] = not (p.is_flag or p.count)
    return out


def hoist(argv: list[str], group: click.Group) -> list[str]:
    """``argv`` with the group's options moved before the verb (unchanged when there are none)."""
    group_opts = _names(group.params)
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "--":  # the group's own part
        i += 1 + (group_opts.get(argv[i], False) and "=" not in argv[i])
    if i >= len(argv) or argv[i].startswith("-"):
        return argv
    if not any(a.split("=", 1)[0] in group_opts for a in argv[i + 1 :]):
        return argv  # the common case: the verb is not loaded here (`run` starts its zygote first)
    verb = group.get_command(click.Context(group), argv[i])
    sub = i
    while isinstance(verb, click.Group):  # `auth login --profile P`: the subcommand's arguments
        own_group = _names(verb.params)
        sub += 1
        while sub < len(argv) and argv[sub].startswith("-") and argv[sub] != "--":
            sub += 1 + (own_group.get(argv[sub], False) and "=" not in argv[sub])
        if sub >= len(argv) or argv[sub].startswith("-"):
            return argv
        verb = verb.get_command(click.Context(verb), argv[sub])
    if verb is None:
        return argv
    own = _names(verb.params) | {"--help": False, "-h": False}
    interspersed = verb.context_settings.get("allow_interspersed_args", True)
    moved: list[str] = []
    kept: list[str] = []
    rest = argv[sub + 1 :]
    j = 0
    while j < len(rest):
        arg = rest[j]
        name = arg.split("=", 1)[0]
        if arg == "--":
            kept += rest[j:]
            break
        if not arg.startswith("-") or arg == "-":
            if not interspersed:
                kept += rest[j:]
                break
            kept.append(arg)
            j += 1
            continue
        takes_value = "=" not in arg
        if name in own:
            width = 1 + (own[name] and takes_value)
            kept += rest[j : j + width]
        elif name in group_opts:
            width = 1 + (group_opts[name] and takes_value)
            moved += rest[j : j + width]
        else:
            width = 1  # an unknown option or short-flag cluster: the verb's parser says what it is
            kept.append(arg)
        j += width
    if not moved:
        return argv
    return [*argv[:i], *moved, *argv[i : sub + 1], *kept]
