"""What FastAPI cannot derive for the OpenAPI document (docs/rest.md).

* ``errors(...)``: the errors one of our own ``/v1`` routes can return, in our error form; a route
  lists them instead of FastAPI's blanket 422 (invalid requests are answered 400, ``ConfigError``).
* ``finish(doc, app)``: what every route shares because a middleware answers it: 401 on each
  route behind the key, 413 on each route with a request body; and the WebSocket routes, which
  FastAPI does not list: each becomes a ``GET`` answered 101 with an ``x-websocket`` extension
  describing its frames (client → server, server → client, close codes).
"""

from __future__ import annotations

from typing import Any

import fastapi.routing
from fastapi import FastAPI
from fastapi.routing import APIWebSocketRoute

from .schemas import ErrorModel, ExecStart

_WHY = {
    400: "invalid request: a malformed parameter or body, or a value refused (ConfigError, ParseError, "
    "UnsupportedOptionError, ExecError)",
    403: "asked over TCP: a host path (volume, `rootfs_path`) outside the server's `--allow-host-path` "
    "directories, or an image whose registry is at a non-public address the server does not list "
    "(`--allow-registry`) (PermissionDeniedError)",
    404: "no such box, snapshot, file, image or volume, or a host path named by the options (NotFoundError)",
    # create pulls a missing image: its registry errors (502, 504) are create's
    409: "the box's state forbids it, or the name is taken (InvalidStateError, AlreadyExistsError)",
    413: "request body over its limit (RequestTooLargeError)",
    502: "the image registry failed or refused (RegistryError)",
    504: "the operation missed its deadline (TimeoutError)",
}
DEFAULT = (
    "unexpected failure: 500 (InternalError, EngineError, StorageError, ...), "
    "503 (StoppedError) while the server shuts down"
)


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The documented errors of one of our routes (``default``: the unexpected ones)."""
    out: dict[int | str, dict[str, Any]] = {c: {"model": ErrorModel, "description": _WHY[c]} for c in codes}
    out["default"] = {"model": ErrorModel, "description": DEFAULT}
    return out


_SHARED_RESPONSES = {
    "Unauthorized": {
        "description": "missing or wrong API key (`Authorization: Bearer <key>`); answered before any route runs",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorModel"}}},
    },
    "RequestTooLarge": {
        "description": "request body over its limit (1 MiB JSON; 8 GiB for tar and archive uploads), "
        "answered while it streams (RequestTooLargeError, code `resource_exhausted`)",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorModel"}}},
    },
}


def _text(kind: str, description: str, props: dict[str, Any] | None = None, required: tuple[str, ...] = ()) -> dict:
    """A JSON text frame ``{"type": kind, ...}``."""
    schema: dict[str, Any] = {
        "type": "object",
        "required": ["type", *required],
        "properties": {"type": {"const": kind}, **(props or {})},
    }
    return {"frame": "text", "type": kind, "description": description, "schema": schema}


def _binary(layout: str, description: str) -> dict[str, Any]:
    return {"frame": "binary", "layout": layout, "description": description}


_INT = {"type": "integer"}


def _start_schema() -> dict[str, Any]:
    schema = ExecStart.model_json_schema()
    schema["properties"]["type"] = {"const": "start"}
    return schema


_STREAM = {"enum": ["stdout", "stderr"]}

EXEC_SOCKET: dict[str, Any] = {
    "summary": "Run one command (WebSocket)",
    "description": "Upgrade to a WebSocket that runs one command: the client sends `start`, the server answers "
    "`started` (or `error`, then closes), streams stdout/stderr as binary frames under the client's credit, and "
    "ends with `exit` once both streams reached EOF. Flow control is credit-based both ways: the server sends at "
    "most `window` bytes of a stream beyond what the client acknowledged with `credit`; the client sends at most "
    "`stdin_window` stdin bytes beyond what the server acknowledged (beyond: close 1008). The command is killed if "
    "the socket closes before its exit status was sent. Errors of the command (unknown box: NotFoundError, ...) "
    "come as an `error` frame after the upgrade.",
    "responses": {"405": {"description": "a GET without the WebSocket upgrade"}},
    "x-websocket": {
        "client": [
            {
                **_text("start", "first frame: the command and its options (`window`: output credit per stream)"),
                "schema": _start_schema(),
            },
            _binary("0x00 + bytes", "stdin, within the stdin credit"),
            _text("close_stdin", "end of stdin"),
            _text(
                "credit", "the client read `bytes` of a stream", {"stream": _STREAM, "bytes": _INT}, ("stream", "bytes")
            ),
            _text("signal", "send a signal to the command", {"signal": _INT}, ("signal",)),
            _text("kill", "kill the command (SIGKILL, or `signal`)", {"signal": _INT}),
            _text("resize", "resize the TTY", {"rows": _INT, "cols": _INT}, ("rows", "cols")),
        ],
        "server": [
            _text(
                "started",
                "the command runs",
                {"id": {"type": "string"}, "pid": _INT, "stdin_window": _INT},
                ("id", "stdin_window"),
            ),
            _text(
                "error",
                "the command could not start (then close)",
                {"error": {"$ref": "#/components/schemas/ErrorDetail"}},
                ("error",),
            ),
            _binary("0x01 + bytes | 0x02 + bytes", "stdout | stderr, within the client's credit"),
            _text("eof", "end of a stream", {"stream": _STREAM}, ("stream",)),
            _text(
                "credit",
                "the server passed on `bytes` of stdin",
                {"stream": {"const": "stdin"}, "bytes": _INT},
                ("stream", "bytes"),
            ),
            _text(
                "exit",
                "the command ended (after both `eof`s the server closes)",
                {
                    "exit_code": _INT,
                    "signal": {"type": ["integer", "null"]},
                    "timed_out": {"type": "boolean"},
                    "error_message": {"type": ["string", "null"]},
                    "duration_ms": {"type": ["number", "null"]},
                    "oom_killed": {"type": "boolean"},
                },
                ("exit_code",),
            ),
        ],
        "close": {"1000": "the command ended and everything was sent", "1008": "stdin beyond the credit granted"},
    },
}

ATTACH_SOCKET: dict[str, Any] = {
    "x-websocket": {
        "client": [
            _binary("bytes", "stdin"),
            _text("resize", "resize the TTY (ignored without one)", {"cols": _INT, "rows": _INT}, ("cols", "rows")),
            _text(
                "signal",
                "send a signal: HUP INT QUIT ABRT USR1 USR2 TERM WINCH only (kill: DELETE the execution)",
                {"sig": _INT},
                ("sig",),
            ),
            _text("stdin_eof", "end of stdin"),
        ],
        "server": [
            _binary("0x01 + bytes | 0x02 + bytes", "stdout | stderr"),
            _text("exit", "after all output; then close 1000", {"exit_code": _INT}, ("exit_code",)),
            _text(
                "error",
                "a refused control frame (invalid JSON, over 4 KiB, unknown type, signal not allowed); "
                "the socket stays open",
                {"message": {"type": "string"}},
                ("message",),
            ),
        ],
        "close": {"1000": "the execution ended and its output was sent"},
        "detach": "closing the socket leaves the command running; a later attach gets the output not yet sent",
    },
}

TUNNEL_SOCKET: dict[str, Any] = {
    "summary": "Open a TCP connection to a port of the box (WebSocket)",
    "description": "Upgrade to a WebSocket carrying one TCP connection to `port` inside the box (`box.network`). "
    "The server answers `connected` (or `error`, then closes); then bytes flow both ways as binary frames, each "
    "side sending at most the window beyond what the other acknowledged with `credit` (the client beyond: close "
    "1008). `eof` ends one direction; either side closing the socket ends the tunnel.",
    "responses": {"404": {"description": "a GET without the WebSocket upgrade"}},
    "x-websocket": {
        "client": [
            _binary("bytes", "for the service, within the credit granted"),
            _text("eof", "end of the client's bytes"),
            _text("credit", "the client read `bytes`", {"bytes": _INT}, ("bytes",)),
        ],
        "server": [
            _text("connected", "the connection is open", {"window": _INT}, ("window",)),
            _text(
                "error",
                "the connection could not open (then close)",
                {"error": {"$ref": "#/components/schemas/ErrorDetail"}},
                ("error",),
            ),
            _binary("bytes", "from the service, within the client's credit"),
            _text("eof", "the service ended its stream"),
            _text("credit", "the server passed on `bytes`", {"bytes": _INT}, ("bytes",)),
        ],
        "close": {"1008": "bytes beyond the credit granted"},
    },
}

WEBSOCKETS: dict[str, tuple[str, dict[str, Any]]] = {
    "/v1/boxes/{box_id}/exec": ("nativeExecSocket", EXEC_SOCKET),
    "/v1/boxes/{box_id}/network/tunnel/{port}": ("nativeTunnelSocket", TUNNEL_SOCKET),
    "/v1/{prefix}/boxes/{box_id}/executions/{exec_id}/attach": ("attachExecution", ATTACH_SOCKET),
}
"""WebSocket routes by their documented path: (operationId, what the document says of them)."""


def _param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def websocket_paths(app: FastAPI) -> set[str]:
    """The app's WebSocket routes as documented paths (``{prefix:path}`` → ``{prefix}``)."""
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    if iterate is None:  # older FastAPI: included routes are copied into app.routes
        pairs = [(r, getattr(r, "path_format", None)) for r in app.routes]
    else:  # newer FastAPI keeps included routers as such
        pairs = [(c.original_route, c.path_format) for c in iterate(app.routes)]
    return {path for route, path in pairs if isinstance(route, APIWebSocketRoute) and path}


def finish(doc: dict[str, Any], app: FastAPI) -> None:
    """Add the shared 401/413 answers and the WebSocket routes to FastAPI's document."""
    doc.setdefault("components", {}).setdefault("responses", {}).update(_SHARED_RESPONSES)
    served = websocket_paths(app)
    for path, (op_id, extra) in WEBSOCKETS.items():
        if path not in served:
            continue
        ops = doc["paths"].setdefault(path, {})
        if "get" not in ops:  # documented as a GET answered 101 (FastAPI lists no WebSocket route)
            names = [seg[1:-1] for seg in path.split("/") if seg.startswith("{")]
            ops["get"] = {"operationId": op_id, "tags": ["websocket"], "parameters": [_param(n) for n in names]}
            responses = {"101": {"description": "WebSocket upgrade"}, **extra.get("responses", {})}
            ops["get"].update({**extra, "responses": responses})
        else:
            ops["get"]["x-websocket"] = extra["x-websocket"]
    for ops in doc["paths"].values():
        for op in ops.values():
            responses = op.setdefault("responses", {})
            if op.get("security") != [] and "401" not in responses:
                responses["401"] = {"$ref": "#/components/responses/Unauthorized"}
            if "requestBody" in op and "413" not in responses:
                responses["413"] = {"$ref": "#/components/responses/RequestTooLarge"}
