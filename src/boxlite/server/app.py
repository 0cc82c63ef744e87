"""The FastAPI application: routers, error mapping, runtime lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.routing import Route

from .. import __version__
from ..api.options import Options
from ..api.runtime import Boxlite
from ..errors import BoxliteError, ConfigError
from ..wire import encode_error, http_status
from . import (
    apidoc,
    boxlite_wire,
    routes_boxes,
    routes_exec,
    routes_files,
    routes_images,
    routes_pause,
    routes_state,
    routes_tunnel,
    routes_volumes,
    wire_tunnel,
)
from .auth import ApiKeyMiddleware, LoopbackGuardMiddleware
from .dashboard import install as install_dashboard
from .hostpaths import HostPaths
from .limits import MAX_BODY, MAX_UPLOAD, BodyLimitMiddleware
from .state import ServerState
from .tcp_limits import TcpLimits, TcpLimitsMiddleware

DESCRIPTION = """REST API of a BoxLite runtime (`boxlite serve`).

Our own API is under `/v1` (operationIds `native...`); BoxLite's REST API, wire-compatible, under
`/v1/{prefix}` (BoxLite's operationIds; `GET /v1/me` advertises the slot). WebSocket routes are listed as
a `GET` answered 101, their frames in the `x-websocket` extension (docs/rest.md).
Authentication: `Authorization: Bearer <api key>` when the server has a key (401 otherwise).
Errors: `{"error": {"type", "message"}}` (BoxLite's routes add its `code`); an invalid request (a malformed
parameter or body) is answered 400, never 422 (BoxLite's routes use 422 for an image that cannot be pulled).
A TCP server without a key answers 403 to requests a browser page could send (an `Origin` header).
"""


def create_app(
    options: Options | None = None,
    api_key: str | None = None,
    loopback_guard: bool = False,
    max_body: int = MAX_BODY,
    max_upload: int = MAX_UPLOAD,
    mcp: bool = False,
    allow_host_paths: Sequence[str] = (),
    allow_any_host_path: bool = False,
    unix_socket: str | None = None,
    allow_registries: Sequence[str] = (),
    allow_any_registry: bool = False,
    allow_box_lan: bool = False,
) -> FastAPI:
    """An app serving one ``Boxlite`` runtime (created at startup, shut down at exit).

    ``loopback_guard``: refuse browser-originated requests on TCP (for a server without a key).
    ``max_body``/``max_upload``: request body limits in bytes (JSON routes / archive upload).
    ``mcp``: also serve the MCP server (streamable HTTP) at ``/mcp``, behind the same auth.
    ``allow_host_paths``: the directories TCP clients may name as volumes or ``rootfs_path``
    (each exactly; none by default); ``allow_any_host_path``: any path (BoxLite's behaviour);
    clients on ``unix_socket`` (the server's own) name any (server/hostpaths.py).
    ``allow_registries``: ``HOST[:PORT]`` at non-public addresses that pulls for TCP clients may
    reach (public ones always); ``allow_any_registry``: any address; ``allow_box_lan``: boxes TCP
    clients make may reach private networks (else public addresses only; server/tcp_limits.py)."""
    host_paths = HostPaths(allow_host_paths, allow_any_host_path, unix_socket)  # ConfigError now
    tcp_limits = TcpLimits.of(allow_registries, allow_any_registry, allow_box_lan)
    mcp_http = None
    if mcp:
        from ..mcp.http import McpHttp

        mcp_http = McpHttp(lambda: app.state.boxlite.runtime)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Boxlite(options or Options())
        app.state.boxlite = ServerState(runtime, host_paths)
        try:  # tasks started here (MCP sessions) are limited as a TCP client is
            with tcp_limits.applied():
                async with mcp_http.run() if mcp_http else contextlib.nullcontext():
                    yield
        finally:
            await wire_tunnel.close_all(app)
            await runtime.shutdown()

    app = FastAPI(
        title="BoxLite", version=__version__, description=DESCRIPTION, lifespan=lifespan,
        docs_url=None, redoc_url=None,
    )  # fmt: skip
    for module in (
        routes_boxes, routes_files, routes_images, routes_exec, routes_pause, routes_state, routes_tunnel,
        routes_volumes,
    ):  # fmt: skip
        app.include_router(module.router)
    boxlite_wire.mount(app)  # BoxLite's REST API, after ours (docs/rest.md)
    if mcp_http is not None:
        from ..mcp.http import PATH

        app.router.routes.append(Route(PATH, endpoint=mcp_http.app))

    @app.exception_handler(BoxliteError)
    async def boxlite_error(_: Request, exc: BoxliteError) -> JSONResponse:
        return JSONResponse({"error": encode_error(exc)}, status_code=http_status(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = ConfigError(f"invalid request: {exc.errors()}")
        return JSONResponse({"error": encode_error(err)}, status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        """A bug: the document's ``default`` answer, in the error form, without the exception's
        text (it may name server paths); the server still logs the traceback."""
        return JSONResponse({"error": {"type": "InternalError", "message": "internal error"}}, status_code=500)

    app.add_middleware(BodyLimitMiddleware, max_body=max_body, max_upload=max_upload)
    if not tcp_limits.none:
        app.add_middleware(TcpLimitsMiddleware, limits=tcp_limits, unix_socket=unix_socket)
    if api_key:  # added last: runs first, so unauthenticated bodies are never read
        app.add_middleware(ApiKeyMiddleware, api_key=api_key)
    install_dashboard(app, api_key)  # /dashboard, /docs; runs before the key check (a browser session -> the key)
    if loopback_guard:
        app.add_middleware(LoopbackGuardMiddleware)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the bearer scheme (the key is checked by a middleware)."""
    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        doc.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
        apidoc.finish(doc, app)
        app.openapi_schema = doc
    return app.openapi_schema
