"""Files: tar archives streamed into (``copy_in``) and out of (``copy_out``) a box."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from .apidoc import errors
from .state import ServerState, get_state

router = APIRouter(prefix="/v1/boxes", tags=["files"])


@router.put(
    "/{box_id}/archive",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="nativeUploadArchive",
    responses=errors(400, 404, 409, 413),
    openapi_extra={"requestBody": {"required": True, "content": {"application/x-tar": {"schema": {}}}}},
)
async def upload_archive(
    box_id: str,
    request: Request,
    path: str = Query(..., description="destination in the box"),
    name: str = Query(..., description="top-level member of the tar (the copied file or directory)"),
    include_parent: bool = Query(True, description="an existing directory receives path/name (docker cp)"),
    overwrite: bool = Query(True, description="false: files that exist in the box are kept"),
    st: ServerState = Depends(get_state),
) -> Response:
    """Extract the tar in the request body into the box (``Box.copy_in``)."""
    box = await st.box(box_id)
    await box.copy_in_tar(request.stream(), path, name, include_parent, overwrite)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{box_id}/archive",
    response_class=StreamingResponse,
    operation_id="nativeDownloadArchive",
    responses={200: {"content": {"application/x-tar": {}}, "description": "tar of the path"}, **errors(400, 404, 409)},
)
async def download_archive(
    box_id: str,
    path: str = Query(..., description="file or directory in the box"),
    st: ServerState = Depends(get_state),
) -> StreamingResponse:
    """A tar of ``path`` (top-level member: its base name) for ``Box.copy_out``."""
    box = await st.box(box_id)
    name = os.path.basename(path.rstrip("/")) or "root"
    chunks = box.copy_out_tar(path)
    first = await anext(chunks, None)  # errors (e.g. NotFoundError) surface before the response starts

    async def body() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                yield first
                async for chunk in chunks:
                    yield chunk
        finally:
            await chunks.aclose()

    return StreamingResponse(body(), media_type="application/x-tar", headers={"X-Boxlite-Name": name})
