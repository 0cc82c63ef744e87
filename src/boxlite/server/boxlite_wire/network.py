"""``POST /{prefix}/boxes/{box_id}/network/tunnel?port=N`` (``prepareTunnel``): the URI of a
service in the box, served by the server's own listener (server/wire_tunnel.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from ..state import ServerState, get_state
from ..wire_tunnel import bind_host, tunnels
from .errors import WireRoute
from .responses import WireErrorResponse, errors

router = APIRouter(route_class=WireRoute)


class WireTunnelDescriptor(BaseModel):
    uri: str = Field(
        json_schema_extra={"format": "uri"},
        description="`http://boxlite:<token>@<host>:<port>`: plain HTTP to the service at this URI (the token as "
        "Basic credentials), or `CONNECT` on it for a raw TCP stream (the token as `Proxy-Authorization` or as the "
        "authority's userinfo). Opaque to clients; a capability: whoever holds it reaches the service.",
    )


_RESPONSES = {
    **errors(400, 404, 409),
    429: {"model": WireErrorResponse, "description": "too many tunnels for the box or server (`resource_exhausted`)"},
}


@router.post(
    "/boxes/{box_id}/network/tunnel", operation_id="prepareTunnel", tags=["BoxLite wire"],
    response_model=WireTunnelDescriptor, responses=_RESPONSES,
    description="The URI of the TCP service on `port` inside the running box (repeat calls: the same URI while the "
    "box runs). Plain HTTP requests to the URI reach the service; an HTTP/1.1 `CONNECT` on it becomes one raw "
    "connection to the service. The listener closes when the box stops or is removed (docs/rest.md).",
)  # fmt: skip
async def prepare_tunnel(
    box_id: str, request: Request, port: int = Query(ge=1, le=65535), st: ServerState = Depends(get_state)
) -> Any:
    box = await st.box(box_id)
    return {"uri": await tunnels(request.app).prepare(box, port, bind_host(request.scope.get("server")))}
