"""``GET /v1/config`` (public) and ``GET /v1/me``: what BoxLite's clients ask a server first."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ...api.options import DEFAULT_CPUS, DEFAULT_MEMORY_MIB
from ..limits import MAX_UPLOAD
from .errors import WireRoute
from .executions import MAX_RUNNING
from .responses import WirePrincipal

router = APIRouter(route_class=WireRoute, tags=["BoxLite wire"])
PATH_PREFIX = "default"
"""The ``{prefix}`` slot ``/v1/me`` advertises: BoxLite's clients then reach its routes at
``/v1/default/...`` (our own API keeps ``/v1/boxes``). Any slot value reaches the same boxes."""


@router.get("/v1/config", operation_id="getConfig", openapi_extra={"security": []})
async def get_config() -> Any:
    return {
        "defaults": {
            "cpus": DEFAULT_CPUS,
            "memory_mib": DEFAULT_MEMORY_MIB,
            "security_preset": "standard",
            "auto_delete": 0,
        },
        "overrides": {},
        "capabilities": {
            "linux_capabilities_enabled": True,
            "max_cpus": 32,
            "max_concurrent_executions": MAX_RUNNING,
            "file_transfer_max_bytes": MAX_UPLOAD,
            "tty_enabled": True,
            "streaming_enabled": True,
            "snapshots_enabled": True,
            "clone_enabled": True,
            "export_enabled": True,
            "supported_security_presets": ["development", "standard", "maximum"],
        },
    }


@router.get("/v1/me", operation_id="getCurrentPrincipal", response_model=WirePrincipal)
async def get_me() -> Any:
    """The server has one credential (its API key, or none on its unix socket)."""
    return {
        "sub": "boxlite-serve",
        "principal_type": "service_account",
        "display_name": "boxlite serve",
        "path_prefix": PATH_PREFIX,
        "scopes": ["boxes:read", "boxes:write", "images:read", "images:write"],
        "expires_at": None,
    }
