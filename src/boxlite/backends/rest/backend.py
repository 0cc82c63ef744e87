"""``RestBackend``: the boxes of a ``boxlite serve`` server, over BoxLite's REST wire format
(docs/rest.md). The server keeps the authoritative state and counters."""

from __future__ import annotations

import builtins
import json
import os
import shlex
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ...api.options import BoxOptions, ExportOptions, env_to_dict
from ...api.results import BoxInfo, BoxMetrics, RuntimeMetrics, SnapshotInfo
from ...errors import BoxliteError, NotFoundError, UnsupportedOptionError
from ...images import ImageConfig, ImageInfo
from ...images.types import PullProgress
from ...runtime.volumes import VolumeInfo
from ...runtime.volumes import check_id as check_volume_id
from ...wire import decode_error
from ..base import Backend, ExecCounters, ExecRequest, ImagesBackend, StartedExec, TunnelStream
from .channel import RemoteChannel
from .convert import box_info, options_json, volume_info
from .download import save_archive
from .transport import QUICK_DEADLINE, Transport, iter_lines_capped


class RestImages(ImagesBackend):
    """The server's image store: pull, list, remove, gc."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    async def pull(self, reference: str, progress: Callable[[PullProgress], None] | None = None) -> ImageInfo:
        """Pull on the server; ``progress`` receives ``PullProgress`` updates (throttled)."""
        if progress is None:
            return ImageInfo(**await self._t.request("POST", "/v1/images/pull", json={"reference": reference}))
        params = {"progress": True}
        async with self._t.stream("POST", "/v1/images/pull", json={"reference": reference}, params=params) as resp:
            async for line in iter_lines_capped(resp, self._t.url):
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

    async def list(self) -> builtins.list[ImageInfo]:
        return [ImageInfo(**i) for i in await self._t.request("GET", "/v1/images", deadline=QUICK_DEADLINE)]

    async def get(self, reference: str) -> ImageInfo | None:
        raise UnsupportedOptionError("images.get", "not part of the REST API")

    async def config(self, reference: str) -> ImageConfig:
        raise UnsupportedOptionError("images.config", "not part of the REST API")

    async def remove(self, reference: str, force: bool = False) -> None:
        await self._t.request("DELETE", f"/v1/images/{reference}", params={"force": force})

    async def load(self, path: str | Path) -> builtins.list[ImageInfo]:
        raise UnsupportedOptionError("images.load", "not part of the REST API")

    async def gc(self) -> int:
        return int((await self._t.request("POST", "/v1/images/gc"))["removed"])


class RestBackend(Backend):
    """A runtime living in a server process; URL ``unix:///path.sock`` or ``http(s)://host:port``."""

    def __init__(self, url: str, api_key: str | None = None) -> None:
        self.transport = Transport(url, api_key)
        self._owned: set[str] = set()  # boxes this client started: stopped by shutdown()
        self._detach: dict[str, bool] = {}  # the detach flag of each box seen

    @property
    def url(self) -> str:
        return self.transport.url

    @property
    def images(self) -> RestImages:
        return RestImages(self.transport)

    @property
    def closed(self) -> bool:
        return self.transport.closed

    def describe(self) -> str:
        return f"url={self.url!r}"

    async def tunnel_uri(self, box_id: str, port: int) -> str:
        """The server's URI for ``port`` of the box (BoxLite's ``prepareTunnel``: a listener of the
        server process; plain HTTP to it, or ``CONNECT``, reaches the service)."""
        answer = await self.transport.request(
            "POST",
            f"/v1/default/boxes/{quote(box_id, safe='')}/network/tunnel",
            params={"port": port},
            deadline=QUICK_DEADLINE,
        )
        uri = answer.get("uri") if isinstance(answer, dict) else None
        if (
            not isinstance(uri, str)
            or not uri.startswith(("http://", "https://"))
            or len(uri) > 2048
            or not uri.isprintable()
            or any(c.isspace() for c in uri)
        ):
            raise BoxliteError(f"{self.url} answered prepareTunnel without a usable URI")
        return uri

    async def whoami(self) -> dict[str, Any] | None:
        """The server's ``GET /v1/me`` (who this client's key is), or None for a server without
        that route once a box listing showed the key is accepted. UnauthorizedError for a key
        the server refuses."""
        try:
            me = await self.transport.request("GET", "/v1/me", deadline=QUICK_DEADLINE)
        except NotFoundError:
            await self.transport.request("GET", "/v1/boxes", deadline=QUICK_DEADLINE)
            return None
        if not isinstance(me, dict):
            raise BoxliteError(f"{self.url} answered /v1/me with {type(me).__name__}, not an object")
        return {k: v for k, v in me.items() if isinstance(k, str) and isinstance(v, (str, int, bool, list, type(None)))}

    # --- named volumes (server/routes_volumes.py) ------------------------------------------------
    async def volume_create(self) -> VolumeInfo:
        return volume_info(await self.transport.request("POST", "/v1/volumes"))

    async def volume_list(self) -> builtins.list[VolumeInfo]:
        return [volume_info(v) for v in await self.transport.request("GET", "/v1/volumes", deadline=QUICK_DEADLINE)]

    async def volume_get(self, volume_id: str) -> VolumeInfo:
        return volume_info(
            await self.transport.request(
                "GET", f"/v1/volumes/{quote(check_volume_id(volume_id))}", deadline=QUICK_DEADLINE
            )
        )

    async def volume_remove(self, volume_id: str, force: bool = False) -> None:
        path = f"/v1/volumes/{quote(check_volume_id(volume_id))}"
        await self.transport.request("DELETE", path, params={"force": force})

    def _seen(self, data: object) -> BoxInfo:
        info = box_info(data)  # type: ignore[arg-type]
        self._detach[info.id] = info.detach
        return info

    @staticmethod
    def _path(box_id: str) -> str:
        return f"/v1/boxes/{box_id}"

    # --- boxes ----------------------------------------------------------------------------
    async def create(self, options: BoxOptions, name: str | None) -> BoxInfo:
        body = {"options": options_json(options), "name": name}
        return self._seen(await self.transport.request("POST", "/v1/boxes", json=body))

    async def get(self, id_or_name: str) -> BoxInfo | None:
        try:
            return self._seen(await self.transport.request("GET", self._path(id_or_name), deadline=QUICK_DEADLINE))
        except NotFoundError:
            return None

    def info(self, box_id: str) -> BoxInfo:
        """A blocking request (``Box.info()`` is synchronous)."""
        return self._seen(self.transport.request_sync("GET", self._path(box_id)))

    async def list(self, state: str | None = None) -> builtins.list[BoxInfo]:
        params = {} if state is None else {"state": state}
        return [
            self._seen(i)
            for i in await self.transport.request("GET", "/v1/boxes", params=params, deadline=QUICK_DEADLINE)
        ]

    async def remove(self, id_or_name: str, force: bool = False) -> None:
        await self.transport.request("DELETE", self._path(id_or_name), params={"force": force})

    async def start(self, box_id: str, detach: bool | None = None) -> BoxInfo:
        if detach is not None:
            raise UnsupportedOptionError("detach", "set it when creating the box on the server")
        info = self._seen(await self.transport.request("POST", f"{self._path(box_id)}/start"))
        if not info.detach:
            self._owned.add(info.id)
        return info

    async def stop(self, box_id: str, timeout: float | None = None) -> None:
        """Stop all processes (``auto_remove`` boxes are removed)."""
        params = {} if timeout is None else {"timeout": timeout}
        await self.transport.request("POST", f"{self._path(box_id)}/stop", params=params)
        self._owned.discard(box_id)

    async def pause(self, box_id: str, to_disk: bool = False) -> BoxInfo:
        params = {"to_disk": "true"} if to_disk else {}
        return self._seen(await self.transport.request("POST", f"{self._path(box_id)}/pause", params=params))

    async def fork(self, box_id: str, n: int = 1) -> builtins.list[BoxInfo]:
        infos = await self.transport.request("POST", f"{self._path(box_id)}/fork", params={"n": n})
        children = [self._seen(info) for info in infos]
        self._owned.update(info.id for info in children if not info.detach)
        return children

    async def resume(self, box_id: str, detach: bool | None = None) -> BoxInfo:
        if detach is not None:
            raise UnsupportedOptionError("detach", "set it when creating the box on the server")
        return self._seen(await self.transport.request("POST", f"{self._path(box_id)}/resume"))

    async def exec_detached(self, box_id: str, request: ExecRequest) -> int:
        r = request
        body = {
            "command": r.command,
            "args": list(r.args),
            "env": env_to_dict(r.env, "env"),
            "user": r.user,
            "cwd": r.cwd,
        }
        answer = await self.transport.request("POST", f"{self._path(box_id)}/exec-detached", json=body)
        return int(answer["pid"])

    async def signal_main(self, box_id: str, signal: int) -> None:
        await self.transport.request("POST", f"{self._path(box_id)}/signal", json={"signal": signal})

    # --- work -----------------------------------------------------------------------------
    async def ready(self, box_id: str) -> None:
        """Nothing to do: the server starts the box as part of an exec."""

    async def exec(self, box_id: str, request: ExecRequest) -> StartedExec:
        r = request
        start = {
            "command": r.command, "args": list(r.args), "env": env_to_dict(r.env, "env"), "tty": bool(r.tty),
            "user": r.user, "timeout_secs": r.timeout_secs, "cwd": r.cwd, "stdin": r.stdin, "rows": r.rows,
            "cols": r.cols,
        }  # fmt: skip
        channel = await RemoteChannel.open(self.transport, box_id, start, shlex.join(r.argv))
        if not self._detach.get(box_id, False):
            self._owned.add(box_id)
        return StartedExec(channel, channel.id)

    async def tunnel(self, box_id: str, port: int, window: int) -> TunnelStream:
        from .tunnel import RemoteTunnel

        return await RemoteTunnel.open(self.transport, box_id, port)

    async def copy_in(
        self, box_id: str, chunks: AsyncIterable[bytes], dest: str, name: str, include_parent: bool,
        overwrite: bool = True,
    ) -> None:  # fmt: skip
        params = {"path": dest, "name": name, "include_parent": include_parent, "overwrite": overwrite}
        headers = {"content-type": "application/x-tar"}
        await self.transport.request(
            "PUT", f"{self._path(box_id)}/archive", params=params, content=chunks, headers=headers
        )

    async def copy_out(self, box_id: str, src: str, name: str, follow_symlinks: bool) -> AsyncGenerator[bytes, None]:
        # follow_symlinks is not part of the wire format: the server archives links as links
        async with self.transport.stream("GET", f"{self._path(box_id)}/archive", params={"path": src}) as resp:
            async for chunk in resp.aiter_raw():
                yield chunk

    # --- disk state: snapshots, clones, archives ------------------------------------------
    def _snap(self, box_id: str, name: str = "") -> str:
        return f"{self._path(box_id)}/snapshots" + (f"/{quote(name, safe='')}" if name else "")

    async def snapshot_create(self, box_id: str, name: str) -> SnapshotInfo:
        return SnapshotInfo(**await self.transport.request("POST", self._snap(box_id), json={"name": name}))

    async def snapshot_list(self, box_id: str) -> builtins.list[SnapshotInfo]:
        data = await self.transport.request("GET", self._snap(box_id), deadline=QUICK_DEADLINE)
        return [SnapshotInfo(**s) for s in data["snapshots"]]

    async def snapshot_get(self, box_id: str, name: str) -> SnapshotInfo | None:
        try:
            return SnapshotInfo(
                **await self.transport.request("GET", self._snap(box_id, name), deadline=QUICK_DEADLINE)
            )
        except NotFoundError:
            return None

    async def snapshot_restore(self, box_id: str, name: str) -> None:
        await self.transport.request("POST", f"{self._snap(box_id, name)}/restore")

    async def snapshot_remove(self, box_id: str, name: str) -> None:
        await self.transport.request("DELETE", self._snap(box_id, name))

    async def clone(self, box_id: str, name: str | None) -> BoxInfo:
        return self._seen(await self.transport.request("POST", f"{self._path(box_id)}/clone", json={"name": name}))

    async def export(self, box_id: str, dest: str, options: ExportOptions) -> str:
        """The server writes the archive; it lands at ``dest`` here, within limits (download.py)."""
        body = {"include_image": options.include_image, "compression": options.compression}
        if options.max_bytes is not None:  # the server stops early; this client checks anyway
            body["max_bytes"] = options.max_bytes
        target = Path(dest).expanduser().absolute()
        async with self.transport.stream("POST", f"{self._path(box_id)}/export", json=body) as resp:
            if target.is_dir():
                name = os.path.basename(resp.headers.get("x-boxlite-name") or "") or f"{box_id}.boxlite"
                target = target / name
            await save_archive(resp, target, options.max_bytes)
        return str(target)

    async def import_box(
        self, archive: str, name: str | None, untrusted: bool = False, engine: str | None = None
    ) -> BoxInfo:
        """Upload the archive; the server checks it as untrusted input whatever ``untrusted`` says."""

        async def chunks() -> AsyncGenerator[bytes, None]:
            with open(archive, "rb") as f:
                while chunk := f.read(1 << 20):
                    yield chunk

        if not os.path.isfile(archive):
            raise NotFoundError(f"no archive at {archive}")
        params = {k: v for k, v in (("name", name), ("engine", engine)) if v}
        headers = {"content-type": "application/octet-stream"}
        path = "/v1/boxes/import"
        return self._seen(await self.transport.request("POST", path, params=params, content=chunks(), headers=headers))

    # --- metrics and shutdown -------------------------------------------------------------
    async def box_metrics(self, box_id: str, counted: ExecCounters) -> BoxMetrics:
        """The server's metrics of the box (its counters cover every client's executions)."""
        return BoxMetrics(
            **await self.transport.request("GET", f"{self._path(box_id)}/metrics", deadline=QUICK_DEADLINE)
        )

    async def metrics(self, counted: ExecCounters) -> RuntimeMetrics:
        return RuntimeMetrics(**await self.transport.request("GET", "/v1/metrics", deadline=QUICK_DEADLINE))

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop the (non-detached) boxes this client started, then close the connections."""
        if self.transport.closed:
            return
        for box_id in list(self._owned):
            try:
                params = {} if timeout is None else {"timeout": timeout}
                await self.transport.request("POST", f"{self._path(box_id)}/stop", params=params)
            except NotFoundError:
                pass
        self._owned.clear()
        await self.transport.aclose()
