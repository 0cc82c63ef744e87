"""Request body limits: a REST client must not make the server buffer or store unbounded data.

``BodyLimitMiddleware`` counts the bytes of each request body as they arrive and stops the
request with 413 as soon as they pass its route's limit, before the rest is read (a declared
``Content-Length`` over the limit is refused without reading anything). JSON routes get
``MAX_BODY``; routes that stream a body through to a box (``PUT .../archive``) get ``MAX_UPLOAD``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

from ..errors import RequestTooLargeError
from ..wire import encode_error

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY = 1 << 20
"""Bytes of a JSON request body (box options, image references)."""
MAX_UPLOAD = 8 << 30
"""Bytes of a streamed upload (``copy_in``'s tar): it goes to the box's disk, never to memory."""
STREAMING_ROUTES = (
    ("PUT", re.compile(r"^/v1/boxes/[^/]+/archive$")),
    ("PUT", re.compile(r"^/v1/(?:.+/)?boxes/[^/]+/files$")),  # BoxLite's upload, with or without its slot
    ("POST", re.compile(r"^/v1/(?:.+/)?boxes/import$")),  # a .boxlite archive, stored on the server's disk
)


class BodyTooLarge(RequestTooLargeError, HTTPException):
    """Raised from ``receive``: a ``BoxliteError`` (the app answers it as JSON with 413) that is
    also an ``HTTPException`` (FastAPI's body parsing lets those through unchanged)."""

    def __init__(self, limit: int) -> None:
        message = f"request body larger than {limit} bytes"
        RequestTooLargeError.__init__(self, message)
        HTTPException.__init__(self, 413, message)

    def __str__(self) -> str:
        return str(self.detail)


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY, max_upload: int = MAX_UPLOAD) -> None:
        self.app, self.max_body, self.max_upload = app, max_body, max_upload

    def limit(self, scope: Scope) -> int:
        method, path = scope.get("method", ""), scope.get("path", "")
        streaming = any(method == m and pattern.match(path) for m, pattern in STREAMING_ROUTES)
        return self.max_upload if streaming else self.max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _reject(send, BodyTooLarge(limit))
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge as e:
            if started:
                raise
            await _reject(send, e)


async def _reject(send: Send, exc: BodyTooLarge) -> None:
    body = json.dumps({"error": {**encode_error(exc), "code": "resource_exhausted"}}).encode()  # code: BoxLite's
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
