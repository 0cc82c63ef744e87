"""Files: tar archives streamed into (``copy_in``) and out of (``copy_out``) a box."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from ..api.box import Box
from ..api.execution import Execution
from ..errors import BoxliteError, NotFoundError
from .schemas import ERROR_RESPONSES
from .state import ServerState, get_state

router = APIRouter(prefix="/v1/boxes", tags=["files"], responses=ERROR_RESPONSES)

# TODO(api): public Box.copy_in_tar / copy_out_tar would spare these private calls.


async def _builtin(box: Box, body: dict[str, Any], label: str) -> Execution:
    client = await box._runtime._core.start(box.id)
    return await box._start_exec(client, body, label)


@router.put(
    "/{box_id}/archive",
    status_code=status.HTTP_204_NO_CONTENT,
    openapi_extra={"requestBody": {"required": True, "content": {"application/x-tar": {"schema": {}}}}},
)
async def upload_archive(
    box_id: str,
    request: Request,
    path: str = Query(..., description="destination in the box"),
    name: str = Query(..., description="top-level member of the tar (the copied file or directory)"),
    include_parent: bool = Query(True, description="an existing directory receives path/name (docker cp)"),
    st: ServerState = Depends(get_state),
) -> Response:
    """Extract the tar in the request body into the box (``Box.copy_in``)."""
    box = await st.box(box_id)
    execution = await _builtin(
        box, {"builtin": "untar", "builtin_args": {"dest": path, "name": name, "into": include_parent}},
        f"copy_in {path}",
    )  # fmt: skip
    stdin = execution.stdin()
    errors = asyncio.ensure_future(execution.stderr().read())
    try:
        async for chunk in request.stream():
            if chunk:
                await stdin.send_input(chunk)
                box.bytes_sent += len(chunk)
        await stdin.close()
    except BaseException:
        await execution.kill()
        raise
    finally:
        result = await execution.wait()
        message = (await errors).strip()
    if result.exit_code != 0:
        raise BoxliteError(f"copy_in to {path} failed: {message or result.error_message}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{box_id}/archive",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-tar": {}}, "description": "tar of the path"}},
)
async def download_archive(
    box_id: str,
    path: str = Query(..., description="file or directory in the box"),
    st: ServerState = Depends(get_state),
) -> StreamingResponse:
    """A tar of ``path`` (top-level member: its base name) for ``Box.copy_out``."""
    box = await st.box(box_id)
    name = os.path.basename(path.rstrip("/")) or "root"
    execution = await _builtin(
        box, {"builtin": "tar", "builtin_args": {"src": path, "name": name}, "stdin": False}, f"copy_out {path}"
    )
    out = execution.stdout().bytes().__aiter__()
    errors = asyncio.ensure_future(execution.stderr().read())
    first = await anext(out, None)
    if first is None:
        result = await execution.wait()
        message = (await errors).strip()
        if result.exit_code == 2 and "no such file" in message:
            raise NotFoundError(f"no such file or directory in box: {path}")
        if result.exit_code != 0:
            raise BoxliteError(f"copy_out of {path} failed: {message or result.error_message}")

    async def body() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                box.bytes_received += len(first)
                yield first
                async for chunk in out:
                    box.bytes_received += len(chunk)
                    yield chunk
            result = await execution.wait()
            if result.exit_code != 0:  # abort the response: the client sees a truncated body
                raise BoxliteError(f"copy_out of {path} failed: {(await errors).strip()}")
        finally:
            if not errors.done():
                await execution.kill()
                errors.cancel()

    return StreamingResponse(body(), media_type="application/x-tar", headers={"X-Boxlite-Name": name})
