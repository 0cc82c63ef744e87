"""``/boxes/{id}/files``: BoxLite's tar upload (extracted at ``path``) and download."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse

from ..state import ServerState, get_state
from .errors import WireRoute
from .responses import errors

router = APIRouter(route_class=WireRoute, tags=["BoxLite wire"])
BLOCK = 512


def first_member(header: bytes) -> str:
    """Top-level name of a tar's first member when its first header is a plain ustar one ("" for
    PAX/GNU long-name headers): a missing ``path`` then becomes that member (a file uploaded to
    ``/dir/name``), or receives the members of a ``./`` tar (a directory's contents)."""
    if len(header) < BLOCK or header[156:157] in (b"x", b"g", b"L", b"K"):
        return ""
    name = header[0:100].split(b"\0", 1)[0]
    if header[257:262] == b"ustar":
        prefix = header[345:500].split(b"\0", 1)[0]
        name = prefix + b"/" + name if prefix else name
    text = name.decode("utf-8", "replace")
    if text == "." or text.startswith("./"):
        return "."  # a directory's contents (how BoxLite's clients pack one): they land in ``path``
    return text.lstrip("/").split("/", 1)[0]


@router.put(
    "/boxes/{box_id}/files",
    status_code=204,
    operation_id="uploadFiles",
    responses=errors(400, 404, 409, 413),
    openapi_extra={"requestBody": {"required": True, "content": {"application/x-tar": {"schema": {}}}}},
)
async def upload_files(
    box_id: str,
    request: Request,
    path: str = Query(..., min_length=1, max_length=4096, description="destination in the box"),
    overwrite: bool = Query(True),
    st: ServerState = Depends(get_state),
) -> Response:
    """Extract the tar in the body at ``path`` (an existing directory receives its members)."""
    box = await st.box(box_id)
    chunks = request.stream().__aiter__()
    head = b""
    async for chunk in chunks:
        head += chunk
        if len(head) >= BLOCK:
            break

    async def body() -> AsyncIterator[bytes]:
        if head:
            yield head
        async for rest in chunks:
            yield rest

    await box.copy_in_tar(body(), path, first_member(head[:BLOCK]), True, overwrite)
    return Response(status_code=204)


@router.get(
    "/boxes/{box_id}/files",
    response_class=StreamingResponse,
    operation_id="downloadFiles",
    responses={200: {"content": {"application/x-tar": {}}, "description": "tar of the path"}, **errors(400, 404, 409)},
)
async def download_files(
    box_id: str,
    path: str = Query(..., min_length=1, max_length=4096),
    follow_symlinks: bool = Query(False),
    st: ServerState = Depends(get_state),
) -> StreamingResponse:
    box = await st.box(box_id)
    chunks = box.copy_out_tar(path, follow_symlinks)
    first = await anext(chunks, None)  # a missing path raises here: 404 before the response starts

    async def body() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                yield first
                async for chunk in chunks:
                    yield chunk
        finally:
            await chunks.aclose()

    return StreamingResponse(body(), media_type="application/x-tar")
