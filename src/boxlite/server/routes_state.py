"""Snapshots, clones, export and import over REST, at BoxLite's paths (``/v1`` standing for its
``/{prefix}``): ``/boxes/{id}/snapshots[/{name}[/restore]]``, ``/boxes/{id}/clone``,
``/boxes/{id}/export`` (the archive as the response body) and ``/boxes/import`` (the archive as
the request body, treated as untrusted: it may not name host paths on the server)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from ..api.options import ExportOptions
from ..errors import BoxliteError, NotFoundError, ResourceExhaustedError
from ..procfs import process_start_time
from .apidoc import errors
from .schemas import BoxInfoModel, dump
from .state import ServerState, get_state

router = APIRouter(prefix="/v1/boxes", tags=["state"])
CHUNK = 1 << 20


class SnapshotModel(BaseModel):
    id: str
    box_id: str
    name: str
    created_at: int
    guest_disk_bytes: int = 0
    container_disk_bytes: int = 0
    size_bytes: int = 0


class ListSnapshotsResponse(BaseModel):
    snapshots: list[SnapshotModel]


class CreateSnapshotRequest(BaseModel):
    name: str = Field(min_length=1, max_length=128)


class CloneBoxRequest(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=128)


class ExportBoxRequest(BaseModel):
    include_image: bool = True
    compression: str = "none"
    max_bytes: int | None = Field(None, gt=0, description="largest archive to write")


@router.post(
    "/{box_id}/snapshots", response_model=SnapshotModel, status_code=status.HTTP_201_CREATED,
    operation_id="nativeCreateSnapshot", responses=errors(400, 404, 409, 413),
)  # fmt: skip
async def create_snapshot(box_id: str, req: CreateSnapshotRequest, st: ServerState = Depends(get_state)) -> Any:
    """A named copy-on-write snapshot of the box's disk."""
    return dump(await (await st.box(box_id)).snapshot.create(name=req.name))


@router.get(
    "/{box_id}/snapshots", response_model=ListSnapshotsResponse, operation_id="nativeListSnapshots",
    responses=errors(404),
)  # fmt: skip
async def list_snapshots(box_id: str, st: ServerState = Depends(get_state)) -> Any:
    return {"snapshots": dump(await (await st.box(box_id)).snapshot.list())}


@router.get(
    "/{box_id}/snapshots/{snapshot_name}", response_model=SnapshotModel, operation_id="nativeGetSnapshot",
    responses=errors(404),
)  # fmt: skip
async def get_snapshot(box_id: str, snapshot_name: str, st: ServerState = Depends(get_state)) -> Any:
    found = await (await st.box(box_id)).snapshot.get(snapshot_name)
    if found is None:
        raise NotFoundError(f"box {box_id} has no snapshot named {snapshot_name!r}")
    return dump(found)


@router.delete(
    "/{box_id}/snapshots/{snapshot_name}", status_code=status.HTTP_204_NO_CONTENT,
    operation_id="nativeRemoveSnapshot", responses=errors(404, 409),
)  # fmt: skip
async def remove_snapshot(box_id: str, snapshot_name: str, st: ServerState = Depends(get_state)) -> Response:
    await (await st.box(box_id)).snapshot.remove(snapshot_name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{box_id}/snapshots/{snapshot_name}/restore", status_code=status.HTTP_204_NO_CONTENT,
    operation_id="nativeRestoreSnapshot", responses=errors(404, 409),
)  # fmt: skip
async def restore_snapshot(box_id: str, snapshot_name: str, st: ServerState = Depends(get_state)) -> Response:
    """The stopped box's disk becomes the snapshot's (409 while it runs)."""
    await (await st.box(box_id)).snapshot.restore(snapshot_name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{box_id}/clone", response_model=BoxInfoModel, status_code=status.HTTP_201_CREATED,
    operation_id="nativeCloneBox", responses=errors(400, 404, 409, 413),
)  # fmt: skip
async def clone_box(box_id: str, req: CloneBoxRequest | None = None, st: ServerState = Depends(get_state)) -> Any:
    """A new stopped box with the box's disk as it is now (a running box is frozen briefly)."""
    copy = await (await st.box(box_id)).clone_box(name=req.name if req else None)
    return dump(st.remember(copy).info())


def _scratch(st: ServerState) -> str:
    """A private directory in the runtime home for archives in transit (same disk as the boxes);
    its ``.owner`` lets the next runtime delete it if this server dies mid-transfer."""
    root = st.runtime.home.root / "transfers"
    root.mkdir(mode=0o700, exist_ok=True)
    work = tempfile.mkdtemp(dir=root)
    with open(os.path.join(work, ".owner"), "w") as f:
        f.write(f"{os.getpid()} {process_start_time(os.getpid()) or 0}")
    return work


@router.post(
    "/{box_id}/export",
    response_class=StreamingResponse,
    operation_id="nativeExportBox",
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "the .boxlite archive"},
        **errors(400, 404, 409, 413),
    },
)
async def export_box(box_id: str, req: ExportBoxRequest | None = None, st: ServerState = Depends(get_state)) -> Any:
    """The box as a ``.boxlite`` archive (written on the server's disk first, then streamed)."""
    box = await st.box(box_id)
    options = ExportOptions(**(req.model_dump() if req else {}))
    work = _scratch(st)
    try:
        path = await box.export(dest=os.path.join(work, "box.boxlite"), options=options)
        f = open(path, "rb")  # noqa: SIM115 (closed by the body)
    except BaseException:
        _cleanup(work)
        raise

    async def body() -> AsyncIterator[bytes]:
        try:
            while chunk := f.read(CHUNK):
                yield chunk
        finally:
            f.close()
            _cleanup(work)

    headers = {"X-Boxlite-Name": f"{box.name or box.id}.boxlite", "Content-Length": str(os.fstat(f.fileno()).st_size)}
    return StreamingResponse(body(), media_type="application/octet-stream", headers=headers)


@router.post(
    "/import",
    response_model=BoxInfoModel,
    status_code=status.HTTP_201_CREATED,
    operation_id="nativeImportBox",
    responses=errors(400, 403, 409, 413),
    openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {}}}}},
)
async def import_box(
    request: Request,
    name: str | None = Query(None, description="name of the new box"),
    engine: str | None = Query(None, description="engine of the new box (default: the archive's)"),
    st: ServerState = Depends(get_state),
) -> Any:
    """A new stopped box from an uploaded archive. Untrusted: digests, paths and sizes are
    checked, and archives naming host paths (volumes, a rootfs directory) are refused."""
    work = _scratch(st)
    try:
        path = os.path.join(work, "upload.boxlite")
        try:
            with open(path, "wb") as f:
                async for chunk in request.stream():
                    f.write(chunk)
        except OSError as e:
            raise ResourceExhaustedError(f"cannot store the uploaded archive: {e.strerror}") from e
        try:
            box = await st.runtime.import_box(path, name=name, untrusted=True, engine=engine)
        except BoxliteError as e:  # the client never learns the server's scratch path
            e.args = tuple(a.replace(path, "the uploaded archive") if isinstance(a, str) else a for a in e.args)
            raise
        return dump(st.remember(box).info())
    finally:
        _cleanup(work)


def _cleanup(work: str) -> None:
    with contextlib.suppress(OSError):
        for entry in os.scandir(work):
            os.unlink(entry.path)
        os.rmdir(work)
