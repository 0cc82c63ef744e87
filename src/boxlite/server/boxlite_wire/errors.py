"""Errors in BoxLite's wire form: ``{"error": {"message", "type", "code"}}`` with the status its
OpenAPI document gives each kind (our ``BoxliteError`` classes mapped onto its error enums)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ... import errors as e

log = logging.getLogger("boxlite.server")

# (our class, HTTP status, BoxLite ``type``, BoxLite ``code``): the first match wins (subclasses first).
_MAP: list[tuple[type[BaseException], int, str, str]] = [
    (e.RequestTooLargeError, 413, "ResourceExhaustedError", "resource_exhausted"),
    (e.ImageError, 422, "ImageError", "image_pull_failed"),
    (e.NotFoundError, 404, "NotFoundError", "not_found"),
    (e.AlreadyExistsError, 409, "AlreadyExistsError", "already_exists"),
    (e.InvalidStateError, 409, "InvalidStateError", "invalid_state"),
    (e.StoppedError, 409, "StoppedError", "stopped"),
    (e.UnsupportedOptionError, 400, "UnsupportedError", "unsupported"),
    (e.ConfigError, 400, "InvalidArgumentError", "invalid_argument"),
    (e.ParseError, 400, "InvalidArgumentError", "invalid_argument"),
    (e.UnsafeArchiveError, 400, "InvalidArgumentError", "invalid_argument"),
    (e.ExecError, 400, "ExecutionError", "execution_failed"),
    (e.TimeoutError, 504, "TimeoutError", "timeout"),
    (e.UnauthorizedError, 401, "AuthError", "unauthenticated"),
    (e.PermissionDeniedError, 403, "AuthError", "permission_denied"),
    (e.ResourceExhaustedError, 429, "ResourceExhaustedError", "resource_exhausted"),
    (e.NetworkError, 502, "NetworkError", "network_unavailable"),
    (e.DatabaseError, 500, "DatabaseError", "database_error"),
    (e.StorageError, 500, "StorageError", "storage_error"),
    (e.EngineError, 503, "EngineError", "engine_unavailable"),
]


def wire_error(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The status and body BoxLite's clients expect for ``exc`` (anything unknown: 500 internal)."""
    for cls, status, kind, code in _MAP:
        if isinstance(exc, cls):
            return status, {"error": {"message": str(exc), "type": kind, "code": code}}
    return 500, {"error": {"message": "internal error", "type": "InternalError", "code": "internal"}}


def wire_response(exc: BaseException) -> JSONResponse:
    status, body = wire_error(exc)
    return JSONResponse(body, status_code=status)


def invalid(message: str) -> JSONResponse:
    return wire_response(e.ConfigError(message))


class WireRoute(APIRoute):
    """A route answering every failure in BoxLite's error form: invalid requests are 400
    ``invalid_argument`` (its document keeps 422 for unprocessable images), never a bare 500."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def wired(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                where = "; ".join(f"{'.'.join(map(str, err.get('loc', ())))}: {err.get('msg')}" for err in exc.errors())
                return invalid(f"invalid request: {where}")
            except e.BoxliteError as exc:
                return wire_response(exc)
            except HTTPException as exc:
                status = exc.status_code if 400 <= exc.status_code < 500 else 500
                code = "not_found" if status == 404 else "invalid_argument"
                kind = "NotFoundError" if status == 404 else "InvalidArgumentError"
                return JSONResponse({"error": {"message": str(exc.detail), "type": kind, "code": code}}, status)
            except Exception:
                log.exception("BoxLite-wire route failed")
                return wire_response(RuntimeError())

        return wired
