"""Server-side state: the runtime and one ``Box`` object per box (so counters accumulate)."""

from __future__ import annotations

from fastapi import Request, WebSocket

from ..api.box import Box
from ..api.runtime import Boxlite
from ..errors import NotFoundError
from .hostpaths import HostPaths


class ServerState:
    def __init__(self, runtime: Boxlite, host_paths: HostPaths | None = None) -> None:
        self.runtime = runtime
        self.host_paths = host_paths or HostPaths()
        self._boxes: dict[str, Box] = {}

    async def box(self, id_or_name: str) -> Box:
        found = await self.runtime.get(id_or_name)
        if found is None:
            raise NotFoundError(f"no box with id or name {id_or_name!r}")
        return self._boxes.setdefault(found.id, found)

    def remember(self, box: Box) -> Box:
        return self._boxes.setdefault(box.id, box)

    def forget(self, box_id: str) -> None:
        self._boxes.pop(box_id, None)


def get_state(request: Request) -> ServerState:
    return request.app.state.boxlite  # type: ignore[no-any-return]


def ws_state(websocket: WebSocket) -> ServerState:
    return websocket.app.state.boxlite  # type: ignore[no-any-return]
