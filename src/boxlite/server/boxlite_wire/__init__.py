"""BoxLite's REST API, wire-compatible, beside ours (docs/rest.md, "BoxLite wire compatibility").

Its box routes are served under ``/v1/{prefix}`` (any slot value; ``/v1/me`` advertises one) since
several of ours at ``/v1/boxes`` have other bodies; those whose meaning is the same at both
places (exec, executions, files, HEAD) are also served without a slot, as BoxLite's local server
does. ``/v1/config`` and ``/v1/me`` sit at the version root.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Path

from .. import routes_state
from . import boxes, discovery, exec_routes, files, network
from .errors import WireRoute
from .responses import as_wire, errors


def routing_slot(prefix: str = Path(max_length=128, description="deployment routing slot (opaque)")) -> str:
    return prefix


def _state_routes() -> APIRouter:
    """Snapshots, clone, export, import (routes_state.py) again under the slot, BoxLite-named."""
    names = {
        ("POST", "/snapshots"): "createSnapshot", ("GET", "/snapshots"): "listSnapshots",
        ("GET", "/snapshots/{snapshot_name}"): "getSnapshot",
        ("DELETE", "/snapshots/{snapshot_name}"): "removeSnapshot",
        ("POST", "/snapshots/{snapshot_name}/restore"): "restoreSnapshot", ("POST", "/clone"): "cloneBox",
        ("POST", "/export"): "exportBox", ("POST", "/import"): "importBox",
    }  # fmt: skip
    router = APIRouter(route_class=WireRoute, tags=["BoxLite wire"])
    for route in routes_state.router.routes:
        path = getattr(route, "path", "").removeprefix("/v1/boxes")
        for method in getattr(route, "methods", ()):
            tail = path.removeprefix("/{box_id}")
            router.add_api_route(
                "/boxes" + path, route.endpoint, methods=[method],  # type: ignore[attr-defined]
                status_code=route.status_code, response_class=route.response_class,  # type: ignore[attr-defined]
                responses=as_wire(route.responses), openapi_extra=route.openapi_extra,  # type: ignore[attr-defined]
                operation_id=names.get((method, tail)), response_model=route.response_model,  # type: ignore[attr-defined]
            )  # fmt: skip
    return router


def mount(app: FastAPI) -> None:
    """Add the routes after ours (ours win where a path means ours)."""
    app.include_router(discovery.router)
    slotted = APIRouter()
    for router in (boxes.router, boxes.shared, exec_routes.router, files.router, network.router, _state_routes()):
        slotted.include_router(router)
    app.include_router(slotted, prefix="/v1/{prefix:path}", dependencies=[Depends(routing_slot)], responses=errors(400))
    plain = APIRouter(route_class=WireRoute, include_in_schema=False)
    for router in (boxes.shared, exec_routes.router, files.router):
        plain.include_router(router)
    app.include_router(plain, prefix="/v1")
