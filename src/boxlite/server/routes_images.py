"""Images: pull, list, remove, garbage-collect."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response, status

from .schemas import ERROR_RESPONSES, GcResult, ImageInfoModel, PullRequest, dump
from .state import ServerState, get_state

router = APIRouter(prefix="/v1/images", tags=["images"], responses=ERROR_RESPONSES)


@router.get("", response_model=list[ImageInfoModel])
async def list_images(st: ServerState = Depends(get_state)) -> Any:
    return dump(await st.runtime.images.list())


@router.post("/pull", response_model=ImageInfoModel)
async def pull_image(req: PullRequest, st: ServerState = Depends(get_state)) -> Any:
    """Pull an image into the server's store (answers when the pull is complete)."""
    return dump(await st.runtime.images.pull(req.reference))


@router.post("/gc", response_model=GcResult)
async def gc_images(st: ServerState = Depends(get_state)) -> Any:
    return {"removed": await st.runtime.images.gc()}


@router.delete("/{reference:path}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_image(reference: str, force: bool = False, st: ServerState = Depends(get_state)) -> Response:
    await st.runtime.images.remove(reference, force)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
