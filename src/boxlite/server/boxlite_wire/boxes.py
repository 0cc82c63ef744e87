"""Boxes, lifecycle, metrics and images in BoxLite's shapes (``Box``, ``ListBoxesResponse``...)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response, status

from ...errors import ConfigError, NotFoundError
from ..state import ServerState, get_state
from .errors import WireRoute
from .models import WireCreateBox, WirePull, WireStopBox, box_json, image_json
from .responses import WireBox, WireBoxList, WireImage, WireImageList, errors

router = APIRouter(route_class=WireRoute)
"""Routes whose paths clash with ours under ``/v1``: served under ``/v1/{prefix}`` only."""
shared = APIRouter(route_class=WireRoute)
"""Routes that mean the same at both places: served under ``/v1/{prefix}`` and ``/v1``."""


def _page(token: str | None) -> int:
    if not token:
        return 0
    try:
        offset = int(base64.urlsafe_b64decode(token.encode() + b"==").decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ConfigError("invalid pageToken") from None
    if offset < 0:
        raise ConfigError("invalid pageToken")
    return offset


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode().rstrip("=")


@router.post(
    "/boxes", status_code=status.HTTP_201_CREATED, operation_id="createBox", tags=["BoxLite wire"],
    response_model=WireBox, responses=errors(400, 403, 404, 409, 413, 422),
)  # fmt: skip
async def create_box(
    req: WireCreateBox, request: Request, response: Response, st: ServerState = Depends(get_state)
) -> Any:
    box = st.remember(await st.runtime.create(st.host_paths.vet(req.to_options(), request), req.name))
    response.headers["Location"] = f"{request.url.path}/{box.id}"
    return box_json(box.info())


@router.get(
    "/boxes", operation_id="listBoxes", tags=["BoxLite wire"], response_model=WireBoxList, responses=errors(400)
)
async def list_boxes(
    page_size: int = Query(100, alias="pageSize", ge=1, le=1000),
    page_token: str | None = Query(None, alias="pageToken", max_length=64),
    status_filter: str | None = Query(None, alias="status", max_length=32),
    st: ServerState = Depends(get_state),
) -> Any:
    boxes = [box_json(i) for i in await st.runtime.list_info()]
    if status_filter is not None:
        boxes = [b for b in boxes if b["status"] == status_filter]
    boxes.sort(key=lambda b: (b["created_at"], b["box_id"]))
    start = _page(page_token)
    end = start + page_size
    return {"boxes": boxes[start:end], "next_page_token": _token(end) if end < len(boxes) else None}


@router.get(
    "/boxes/{box_id}", operation_id="getBox", tags=["BoxLite wire"], response_model=WireBox, responses=errors(404)
)
async def get_box(box_id: str, st: ServerState = Depends(get_state)) -> Any:
    info = await st.runtime.get_info(box_id)
    if info is None:
        raise NotFoundError(f"box not found: {box_id[:128]}")
    return box_json(info)


@shared.head(
    "/boxes/{box_id}", status_code=204, operation_id="boxExists", tags=["BoxLite wire"],
    responses={404: {"description": "no such box"}},
)  # fmt: skip
async def box_exists(box_id: str, st: ServerState = Depends(get_state)) -> Response:
    found = await st.runtime.get_info(box_id) is not None
    return Response(status_code=204 if found else 404)


@router.delete(
    "/boxes/{box_id}", status_code=204, operation_id="removeBox", tags=["BoxLite wire"], responses=errors(404, 409)
)
async def remove_box(box_id: str, force: bool = False, st: ServerState = Depends(get_state)) -> Response:
    box = await st.box(box_id)
    await st.runtime.remove(box.id, force)
    st.forget(box.id)
    return Response(status_code=204)


@router.post(
    "/boxes/{box_id}/start", operation_id="startBox", tags=["BoxLite wire"], response_model=WireBox,
    responses=errors(404, 409, 504),
)  # fmt: skip
async def start_box(box_id: str, st: ServerState = Depends(get_state)) -> Any:
    box = await st.box(box_id)
    await box.start()
    return box_json(box.info())


@router.post(
    "/boxes/{box_id}/stop", operation_id="stopBox", tags=["BoxLite wire"], response_model=WireBox,
    responses=errors(400, 404, 409),
)  # fmt: skip
async def stop_box(box_id: str, req: WireStopBox | None = None, st: ServerState = Depends(get_state)) -> Any:
    """Stop the box and answer it as it is now (a box removed on stop: as it was, ``stopped``)."""
    box = await st.box(box_id)
    before = box.info()
    await box.stop(req.timeout_seconds if req else None)
    info = await st.runtime.get_info(box.id)
    if info is None:
        st.forget(box.id)
        return {**box_json(before), "status": "stopped", "pid": None}
    return box_json(info)


def _ms(value: float | None) -> int | None:
    return None if value is None else int(value)


@router.get("/boxes/{box_id}/metrics", operation_id="getBoxMetrics", tags=["BoxLite wire"], responses=errors(404))
async def box_metrics(box_id: str, st: ServerState = Depends(get_state)) -> Any:
    m = await (await st.box(box_id)).metrics()
    counters = ("commands_executed_total", "exec_errors_total", "bytes_sent_total", "bytes_received_total",
                "cpu_percent", "memory_bytes", "network_bytes_sent", "network_bytes_received",
                "network_tcp_connections", "network_tcp_errors")  # fmt: skip
    stages = ("filesystem_setup", "image_prepare", "guest_rootfs", "box_config", "box_spawn", "container_init")
    timing = {f"{s}_ms": _ms(getattr(m, f"stage_{s}_ms", None)) for s in stages}
    timing["total_create_ms"] = _ms(m.total_create_duration_ms)
    timing["guest_boot_ms"] = _ms(m.guest_boot_duration_ms)
    return {**{f: getattr(m, f, None) for f in counters}, "boot_timing": timing}


# After the box routes: with a multi-segment slot, "/v1/{prefix}/metrics" also matches
# ".../boxes/{id}/metrics".
@router.get("/metrics", operation_id="getRuntimeMetrics", tags=["BoxLite wire"], responses=errors())
async def runtime_metrics(st: ServerState = Depends(get_state)) -> Any:
    m = await st.runtime.metrics()
    fields = ("boxes_created_total", "boxes_failed_total", "num_running_boxes", "total_commands_executed",
              "total_exec_errors")  # fmt: skip
    return {"boxes_stopped_total": getattr(m, "boxes_stopped_total", 0), **{f: getattr(m, f, 0) for f in fields}}


@router.post(
    "/images/pull", operation_id="pullImage", tags=["BoxLite wire"], response_model=WireImage,
    responses=errors(400, 403, 422),
)  # fmt: skip
async def pull_image(req: WirePull, st: ServerState = Depends(get_state)) -> Any:
    return image_json(await st.runtime.images.pull(req.reference))


@router.get(
    "/images", operation_id="listImages", tags=["BoxLite wire"], response_model=WireImageList, responses=errors(400)
)
async def list_images(
    page_size: int = Query(100, alias="pageSize", ge=1, le=1000),
    page_token: str | None = Query(None, alias="pageToken", max_length=64),
    st: ServerState = Depends(get_state),
) -> Any:
    images = [image_json(i) for i in await st.runtime.images.list()]
    start = _page(page_token)
    end = start + page_size
    return {"images": images[start:end], "next_page_token": _token(end) if end < len(images) else None}


async def _image(st: ServerState, image_id: str) -> dict[str, Any] | None:
    images = map(image_json, await st.runtime.images.list())
    return next((i for i in images if image_id in (i["id"], i["reference"])), None)


@router.get(
    "/images/{image_id:path}", operation_id="getImage", tags=["BoxLite wire"], response_model=WireImage,
    responses=errors(404),
)  # fmt: skip
async def get_image(image_id: str, st: ServerState = Depends(get_state)) -> Any:
    found = await _image(st, image_id)
    if found is None:
        raise NotFoundError(f"image not found: {image_id[:200]}")
    return found


@router.head(
    "/images/{image_id:path}", status_code=204, operation_id="imageExists", tags=["BoxLite wire"],
    responses={404: {"description": "no such image"}},
)  # fmt: skip
async def image_exists(image_id: str, st: ServerState = Depends(get_state)) -> Response:
    return Response(status_code=204 if await _image(st, image_id) is not None else 404)
