"""Boxes: create, list, inspect, remove, start, stop, metrics; runtime metrics and health."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response, status

from .. import __version__
from ..errors import NotFoundError
from .apidoc import errors
from .schemas import (
    BoxInfoModel,
    BoxMetricsModel,
    CreateBoxRequest,
    DetachedExecModel,
    DetachedExecRequest,
    HealthModel,
    RuntimeMetricsModel,
    SignalRequest,
    dump,
)
from .state import ServerState, get_state

router = APIRouter(prefix="/v1")


@router.get(
    "/health", response_model=HealthModel, tags=["runtime"], openapi_extra={"security": []},
    operation_id="nativeGetHealth", responses=errors(),
)  # fmt: skip
async def health() -> dict[str, Any]:
    """Liveness probe (no authentication needed)."""
    return {"status": "ok", "version": __version__}


@router.get(
    "/metrics", response_model=RuntimeMetricsModel, tags=["runtime"], operation_id="nativeGetRuntimeMetrics",
    responses=errors(),
)  # fmt: skip
async def runtime_metrics(st: ServerState = Depends(get_state)) -> Any:
    return dump(await st.runtime.metrics())


@router.post(
    "/boxes", response_model=BoxInfoModel, status_code=status.HTTP_201_CREATED, tags=["boxes"],
    operation_id="nativeCreateBox", responses=errors(400, 403, 404, 409, 413, 502, 504),
)  # fmt: skip
async def create_box(req: CreateBoxRequest, request: Request, st: ServerState = Depends(get_state)) -> Any:
    """Create a box (state ``configured``); it starts on ``start`` or on its first exec. Host
    paths (volumes, ``rootfs_path``) over TCP: only inside ``--allow-host-path`` directories (403)."""
    options = st.host_paths.vet(req.options.to_options(), request)
    box = st.remember(await st.runtime.create(options, req.name))
    return dump(box.info())


@router.get(
    "/boxes", response_model=list[BoxInfoModel], tags=["boxes"], operation_id="nativeListBoxes", responses=errors()
)
async def list_boxes(state: str | None = None, st: ServerState = Depends(get_state)) -> Any:
    return dump(await st.runtime.list_info(state))


@router.get(
    "/boxes/{box_id}", response_model=BoxInfoModel, tags=["boxes"], operation_id="nativeGetBox", responses=errors(404)
)
async def inspect_box(box_id: str, st: ServerState = Depends(get_state)) -> Any:
    info = await st.runtime.get_info(box_id)
    if info is None:
        raise NotFoundError(f"no box with id or name {box_id!r}")
    return dump(info)


@router.delete(
    "/boxes/{box_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["boxes"], operation_id="nativeRemoveBox",
    responses=errors(400, 404, 409),
)  # fmt: skip
async def remove_box(box_id: str, force: bool = False, st: ServerState = Depends(get_state)) -> Response:
    box = await st.box(box_id)
    await st.runtime.remove(box.id, force)
    st.forget(box.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/boxes/{box_id}/start", response_model=BoxInfoModel, tags=["boxes"], operation_id="nativeStartBox",
    responses=errors(400, 404, 409, 504),
)  # fmt: skip
async def start_box(box_id: str, st: ServerState = Depends(get_state)) -> Any:
    box = await st.box(box_id)
    await box.start()
    return dump(box.info())


@router.post(
    "/boxes/{box_id}/stop", status_code=status.HTTP_204_NO_CONTENT, tags=["boxes"], operation_id="nativeStopBox",
    responses=errors(400, 404, 504),
)  # fmt: skip
async def stop_box(
    box_id: str,
    timeout: float | None = Query(None, description="grace period in seconds (negative: wait forever)"),
    st: ServerState = Depends(get_state),
) -> Response:
    """Stop the box; a box with ``auto_remove`` is removed too."""
    box = await st.box(box_id)
    await box.stop(timeout)
    if await st.runtime.get(box.id) is None:
        st.forget(box.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/boxes/{box_id}/signal", status_code=status.HTTP_204_NO_CONTENT, tags=["boxes"],
    operation_id="nativeSignalBox", responses=errors(400, 404, 409),
)  # fmt: skip
async def signal_box(box_id: str, req: SignalRequest, st: ServerState = Depends(get_state)) -> Response:
    """Send a signal to the box's main process only (``boxlite kill -s USR1``); 409 when the box is
    not running or has no main process."""
    await (await st.box(box_id)).signal_main(req.signal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/boxes/{box_id}/exec-detached", response_model=DetachedExecModel, tags=["boxes"],
    operation_id="nativeExecDetached", responses=errors(400, 404, 409),
)  # fmt: skip
async def exec_detached(box_id: str, req: DetachedExecRequest, st: ServerState = Depends(get_state)) -> Any:
    """Start a command and leave it running (``boxlite exec -d``); its output goes to the box's
    capped ``exec.log``, not to the caller."""
    box = await st.box(box_id)
    return {"pid": await box.exec_detached(req.command, req.args, req.env, req.user, req.cwd)}


@router.get(
    "/boxes/{box_id}/metrics", response_model=BoxMetricsModel, tags=["boxes"], operation_id="nativeGetBoxMetrics",
    responses=errors(404),
)  # fmt: skip
async def box_metrics(box_id: str, st: ServerState = Depends(get_state)) -> Any:
    return dump(await (await st.box(box_id)).metrics())
