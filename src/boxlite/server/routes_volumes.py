"""Named volumes: create, list, inspect, remove (api/volumes.py; a box mounts one by id)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response, status

from .apidoc import errors
from .schemas import VolumeInfoModel, dump
from .state import ServerState, get_state

router = APIRouter(prefix="/v1/volumes", tags=["volumes"])


@router.post(
    "", response_model=VolumeInfoModel, status_code=status.HTTP_201_CREATED, operation_id="nativeCreateVolume",
    responses=errors(),
)  # fmt: skip
async def create_volume(st: ServerState = Depends(get_state)) -> Any:
    """A new empty volume in the server's home; its id is assigned by the server.
    More than 1024 volumes: ResourceExhaustedError (500, code ``resource_exhausted``)."""
    return dump(await st.runtime.volumes.create())


@router.get("", response_model=list[VolumeInfoModel], operation_id="nativeListVolumes", responses=errors())
async def list_volumes(st: ServerState = Depends(get_state)) -> Any:
    return dump(await st.runtime.volumes.list())


@router.get("/{volume_id}", response_model=VolumeInfoModel, operation_id="nativeGetVolume", responses=errors(400, 404))
async def get_volume(volume_id: str, st: ServerState = Depends(get_state)) -> Any:
    """400 for an id not of the form ``vol-`` + 16 hex digits, 404 for an unknown one."""
    return dump(await st.runtime.volumes.get(volume_id))


@router.delete(
    "/{volume_id}", status_code=status.HTTP_204_NO_CONTENT, operation_id="nativeRemoveVolume",
    responses=errors(400, 404, 409),
)  # fmt: skip
async def remove_volume(volume_id: str, force: bool = False, st: ServerState = Depends(get_state)) -> Response:
    """Delete the volume and its data. 409 while a box names it (with ``force``: only while one of
    them runs; stopped boxes then fail to start); ``force``: a missing volume is success."""
    await st.runtime.volumes.remove(volume_id, force)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
