"""Response bodies of BoxLite's REST API as models: they describe the OpenAPI document (the
routes build plain dicts; ``response_model`` checks them on the way out)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class WireErrorModel(BaseModel):
    message: str
    type: str = Field(description="PascalCase error type (BoxLite's enum)")
    code: str = Field(description="snake_case machine code (BoxLite's enum): match on this")


class WireErrorResponse(BaseModel):
    error: WireErrorModel


_WHY = {
    400: "invalid request (`invalid_argument`, `unsupported`), also a routing slot over 128 characters",
    403: "a host path (volume, `rootfs_path`) outside the server's `--allow-host-path` directories, or an "
    "image whose registry is at a non-public address it does not list (`permission_denied`)",
    404: "no such box, execution, file or image (`not_found`)",
    409: "the state forbids it (`invalid_state`, `already_exists`, `stopped`)",
    413: "request body over its limit (`resource_exhausted`)",
    422: "image could not be pulled (`image_pull_failed`)",
    504: "the box did not become ready in time (`timeout`)",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The errors a route documents (with ``default``, FastAPI adds no 422 of its own next to these)."""
    out: dict[int | str, dict[str, Any]] = {c: {"model": WireErrorResponse, "description": _WHY[c]} for c in codes}
    out["default"] = {"model": WireErrorResponse, "description": "unexpected server error (`internal`)"}
    return out


def as_wire(responses: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """One of our routes' documented errors (apidoc.errors) in BoxLite's error form."""
    return {code: {**r, "model": WireErrorResponse} if "model" in r else r for code, r in responses.items()}


class WireBox(BaseModel):
    box_id: str
    name: str | None = None
    status: Literal["configured", "running", "stopping", "stopped", "paused", "failed", "unknown"]
    created_at: str
    updated_at: str
    pid: int | None = None
    image: str
    cpus: int
    memory_mib: int
    labels: dict[str, str] = Field(default_factory=dict)
    auto_pause: int = 0
    auto_delete: int = 0
    auto_resume: bool = False


class WireBoxList(BaseModel):
    boxes: list[WireBox]
    next_page_token: str | None = None


class WireExecResponse(BaseModel):
    execution_id: str


class WireExecutionInfo(BaseModel):
    execution_id: str
    status: Literal["running", "completed", "killed", "timed_out"]
    exit_code: int | None = None
    started_at: str
    duration_ms: int | None = None
    error_message: str | None = None


class WirePrincipal(BaseModel):
    sub: str
    principal_type: Literal["user", "service_account"]
    display_name: str | None = None
    path_prefix: str | None = None
    scopes: list[str]
    expires_at: str | None = None


class WireImage(BaseModel):
    reference: str
    repository: str
    tag: str
    id: str
    cached_at: str
    size_bytes: int | None = None


class WireImageList(BaseModel):
    images: list[WireImage]
    next_page_token: str | None = None
