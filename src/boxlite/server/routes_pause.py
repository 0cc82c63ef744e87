"""Pause, resume and fork a box (BoxLite's REST API has no such routes: ours, beside ``start``/``stop``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from .apidoc import errors
from .schemas import BoxInfoModel, dump
from .state import ServerState, get_state

router = APIRouter(prefix="/v1")


@router.post(
    "/boxes/{box_id}/pause", response_model=BoxInfoModel, tags=["boxes"], operation_id="nativePauseBox",
    responses=errors(400, 404, 409),
)  # fmt: skip
async def pause_box(
    box_id: str,
    to_disk: bool = Query(False, description="save the memory in the box's dir and free it (VM engine)"),
    st: ServerState = Depends(get_state),
) -> Any:
    """Freeze every process of a running box where it is (state ``paused``); exec on it is
    refused with 409 (InvalidStateError) unless the box has ``auto_resume``."""
    box = await st.box(box_id)
    await box.pause(to_disk=to_disk)
    return dump(box.info())


@router.post(
    "/boxes/{box_id}/resume", response_model=BoxInfoModel, tags=["boxes"], operation_id="nativeResumeBox",
    responses=errors(404, 409),
)  # fmt: skip
async def resume_box(box_id: str, st: ServerState = Depends(get_state)) -> Any:
    """Let a paused box's processes go on where they were."""
    box = await st.box(box_id)
    await box.resume()
    return dump(box.info())


@router.post(
    "/boxes/{box_id}/fork", response_model=list[BoxInfoModel], tags=["boxes"], operation_id="nativeForkBox",
    responses=errors(400, 404, 409),
)  # fmt: skip
async def fork_box(
    box_id: str,
    n: int = Query(1, ge=1, le=16, description="how many copies"),
    st: ServerState = Depends(get_state),
) -> Any:
    """``n`` new running boxes going on from the running box's memory and disk (VM engine)."""
    box = await st.box(box_id)
    return dump([st.remember(child).info() for child in await box.fork(n)])
