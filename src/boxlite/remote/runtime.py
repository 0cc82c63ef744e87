"""``RemoteBoxlite``: the ``Boxlite`` API against a ``boxlite serve`` server."""

from __future__ import annotations

import json
from collections.abc import Callable

from ..api.options import BoxOptions
from ..api.results import BoxInfo, RuntimeMetrics
from ..errors import BoxliteError, NotFoundError
from ..images import ImageInfo
from ..images.types import PullProgress
from ..server.wire import decode_error
from .box import RemoteBox
from .convert import box_info, options_json
from .transport import Transport


class RemoteImages:
    """``runtime.images`` of a server: pull, list, remove, gc."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    async def pull(self, reference: str, progress: Callable[[PullProgress], None] | None = None) -> ImageInfo:
        """Pull on the server; ``progress`` receives ``PullProgress`` updates (throttled)."""
        if progress is None:
            return ImageInfo(**await self._t.request("POST", "/v1/images/pull", json={"reference": reference}))
        params = {"progress": True}
        async with self._t.stream("POST", "/v1/images/pull", json={"reference": reference}, params=params) as resp:
            async for line in resp.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                if "progress" in event:
                    progress(PullProgress(**event["progress"]))
                elif "image" in event:
                    return ImageInfo(**event["image"])
                else:
                    raise decode_error(event)
        raise BoxliteError(f"the server ended the pull of {reference} without a result")

    async def list(self) -> list[ImageInfo]:
        return [ImageInfo(**i) for i in await self._t.request("GET", "/v1/images")]

    async def remove(self, reference: str, force: bool = False) -> None:
        await self._t.request("DELETE", f"/v1/images/{reference}", params={"force": force})

    async def gc(self) -> int:
        return int((await self._t.request("POST", "/v1/images/gc"))["removed"])


class RemoteBoxlite:
    """A runtime living in a server process; URL ``unix:///path.sock`` or ``http(s)://host:port``."""

    def __init__(self, url: str, api_key: str | None = None) -> None:
        self._transport = Transport(url, api_key)
        self._owned: set[str] = set()

    @property
    def url(self) -> str:
        return self._transport.url

    @property
    def images(self) -> RemoteImages:
        return RemoteImages(self._transport)

    def _started(self, info: BoxInfo) -> None:
        if not info.detach:
            self._owned.add(info.id)

    # --- boxes ------------------------------------------------------------------------------
    async def create(self, options: BoxOptions, name: str | None = None) -> RemoteBox:
        body = {"options": options_json(options), "name": name}
        return RemoteBox(self, box_info(await self._transport.request("POST", "/v1/boxes", json=body)))

    async def get(self, id_or_name: str) -> RemoteBox | None:
        info = await self.get_info(id_or_name)
        return None if info is None else RemoteBox(self, info)

    async def get_or_create(self, options: BoxOptions, name: str | None = None) -> tuple[RemoteBox, bool]:
        if name is not None:
            box = await self.get(name)
            if box is not None:
                return box, False
        return await self.create(options, name), True

    async def get_info(self, id_or_name: str) -> BoxInfo | None:
        try:
            return box_info(await self._transport.request("GET", f"/v1/boxes/{id_or_name}"))
        except NotFoundError:
            return None

    async def list_info(self, state: str | None = None) -> list[BoxInfo]:
        params = {} if state is None else {"state": state}
        return [box_info(i) for i in await self._transport.request("GET", "/v1/boxes", params=params)]

    async def remove(self, id_or_name: str, force: bool = False) -> None:
        await self._transport.request("DELETE", f"/v1/boxes/{id_or_name}", params={"force": force})

    async def metrics(self) -> RuntimeMetrics:
        return RuntimeMetrics(**await self._transport.request("GET", "/v1/metrics"))

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop the (non-detached) boxes this client started, then close the connections."""
        if self._transport.closed:
            return
        for box_id in list(self._owned):
            try:
                params = {} if timeout is None else {"timeout": timeout}
                await self._transport.request("POST", f"/v1/boxes/{box_id}/stop", params=params)
            except NotFoundError:
                pass
        self._owned.clear()
        await self._transport.aclose()

    async def __aenter__(self) -> RemoteBoxlite:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    def __repr__(self) -> str:
        return f"RemoteBoxlite(url={self.url!r})"
