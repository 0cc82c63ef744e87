"""Images: pull, list, remove, garbage-collect."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Response, status
from fastapi.responses import StreamingResponse

from ..images.types import PullProgress
from ..wire import encode_error
from .apidoc import errors
from .schemas import GcResult, ImageInfoModel, PullRequest, dump
from .state import ServerState, get_state

router = APIRouter(prefix="/v1/images", tags=["images"])


@router.get("", response_model=list[ImageInfoModel], operation_id="nativeListImages", responses=errors())
async def list_images(st: ServerState = Depends(get_state)) -> Any:
    return dump(await st.runtime.images.list())


@router.post(
    "/pull",
    response_model=ImageInfoModel,
    operation_id="nativePullImage",
    responses={
        200: {"content": {"application/x-ndjson": {}}, "description": "with ?progress=true"},
        **errors(400, 403, 404, 413, 502, 504),
    },
)
async def pull_image(req: PullRequest, progress: bool = False, st: ServerState = Depends(get_state)) -> Any:
    """Pull an image into the server's store; answers when the pull is complete.

    With ``progress=true`` the answer is NDJSON: ``{"progress": {layer, downloaded, total, done}}``
    lines (at most ~5 per second per layer), then ``{"image": ImageInfo}`` or ``{"error": ...}``.
    """
    if not progress:
        return dump(await st.runtime.images.pull(req.reference))
    return StreamingResponse(_pull_events(st, req.reference), media_type="application/x-ndjson")


async def _pull_events(st: ServerState, reference: str) -> AsyncIterator[bytes]:
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    last: dict[str, float] = {}

    def on_progress(p: PullProgress) -> None:
        now = time.monotonic()
        if p.done or now - last.get(p.layer, 0.0) >= 0.2:
            last[p.layer] = now
            events.put_nowait({"progress": dump(p)})

    async def run() -> None:
        try:
            events.put_nowait({"image": dump(await st.runtime.images.pull(reference, on_progress))})
        except Exception as e:
            events.put_nowait({"error": encode_error(e)})

    task = asyncio.ensure_future(run())
    try:
        while True:
            event = await events.get()
            yield (json.dumps(event) + "\n").encode()
            if "progress" not in event:
                return
    finally:
        task.cancel()


@router.post("/gc", response_model=GcResult, operation_id="nativeGcImages", responses=errors())
async def gc_images(st: ServerState = Depends(get_state)) -> Any:
    return {"removed": await st.runtime.images.gc()}


@router.delete(
    "/{reference:path}", status_code=status.HTTP_204_NO_CONTENT, operation_id="nativeRemoveImage",
    responses=errors(400, 404, 409),
)  # fmt: skip
async def remove_image(reference: str, force: bool = False, st: ServerState = Depends(get_state)) -> Response:
    await st.runtime.images.remove(reference, force)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
