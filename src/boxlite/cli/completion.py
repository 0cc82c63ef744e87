"""``completion bash|zsh|fish``: the shell script that completes verbs, options and box names.

The script calls ``boxlite`` back with ``_BOXLITE_COMPLETE`` set (click's protocol); box names
come from ``common.complete_box`` (the home, ``--url`` or ``--ray`` given on the line so far)."""

from __future__ import annotations

import click

COMPLETE_VAR = "_BOXLITE_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> int:
    """Print the completion script of SHELL, e.g. `boxlite completion bash > /etc/bash_completion.d/boxlite`."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    if cls is None:  # click knows the three shells above
        raise click.UsageError(f"no completion for {shell}")
    root = ctx.find_root().command
    click.echo(cls(root, {}, "boxlite", COMPLETE_VAR).source())
    return 0
