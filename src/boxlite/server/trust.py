"""Which requests come from the server's own user: those on its unix socket (created 0700), who
could run the library themselves. TCP clients hold at most an API key, which is not the host
account: what they may name on the host (server/hostpaths.py) and where pulls made for them
may connect and what their boxes reach (server/tcp_limits.py) is limited."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def over_unix_socket(scope: Mapping[str, Any], unix_socket: str | None) -> bool:
    """Whether the request came in on ``unix_socket``, decided by the listening socket (uvicorn's
    ``server``: the socket's path and no port), which a client cannot choose or spoof, unlike
    its own address."""
    server = scope.get("server")
    return (
        unix_socket is not None
        and isinstance(server, (tuple, list))
        and len(server) == 2
        and server[1] is None
        and server[0] == unix_socket
    )
