"""Busybox ``nc`` in a box, without its race on standard input.

Busybox's small ``nc`` (client or ``-l`` server) exits as soon as its standard input ends, even
if the other side's bytes have not arrived yet. ``nc ... </dev/null`` (or a server started in
the background, whose stdin a shell points at ``/dev/null``) therefore reads nothing whenever
the peer is a little slow: a probe that should see a banner misses it, and a probe meant to
prove a port unreachable passes without ever reading. These shell snippets give ``nc`` a stdin
that never ends (a FIFO opened read-write): it exits when the peer closes or ``-w``/``timeout``
ends it.
"""

from __future__ import annotations

FIFO = "/tmp/.boxnc-stdin"


def nc(args: str, timeout: int | None = None) -> str:
    """A shell command running ``nc ARGS`` (under ``timeout`` seconds) on a stdin that never ends."""
    limit = f"timeout {timeout} " if timeout else ""
    return f"mkfifo {FIFO} 2>/dev/null; [ -p {FIFO} ] && {limit}nc {args} <>{FIFO}"
