"""How a tool reports a ``BoxliteError``: an MCP tool error naming its type, never a crash."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from mcp.server.mcpserver.exceptions import ToolError

from ..errors import BoxliteError

P = ParamSpec("P")
R = TypeVar("R")


def typed(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """A BoxliteError becomes the tool's error result ("NotFoundError: no box ...")."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except BoxliteError as e:
            raise ToolError(f"{type(e).__name__}: {e}") from None

    return wrapper
