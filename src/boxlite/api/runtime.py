"""``Boxlite``: the runtime object users create boxes with."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import BoxliteError, NotFoundError
from ..images import ImageConfig, ImageInfo, ImageManager, load_registries_from_config
from ..runtime.home import Home
from ..runtime.lifecycle import BoxRuntime
from .box import Box, record_info
from .options import BoxOptions, Options
from .results import BoxInfo, RuntimeMetrics

if TYPE_CHECKING:
    from ..remote import RemoteBoxlite


class ImagesHandle:
    """``runtime.images``: pull, list, load and remove images of this home."""

    def __init__(self, manager: ImageManager, core: BoxRuntime) -> None:
        self._m = manager
        self._core = core

    async def pull(self, reference: str, progress: Any = None) -> ImageInfo:
        return await self._m.pull(reference, progress)

    async def list(self) -> list[ImageInfo]:
        return self._m.list()

    async def get(self, reference: str) -> ImageInfo | None:
        """The stored image ``reference`` names, or None (never pulls)."""
        try:
            return self._m._lookup(reference)
        except BoxliteError:
            return None

    async def config(self, reference: str) -> ImageConfig:
        """The image's config (entrypoint, cmd, env, ...); pulls the image when missing."""
        return (await self._m.resolve(image=reference)).config

    async def remove(self, reference: str, force: bool = False) -> None:
        self._m.remove(reference, force)

    async def load(self, path: str | Path) -> builtins.list[ImageInfo]:
        return self._m.load(path)

    async def gc(self) -> int:
        """Delete blobs and unpacked layers that no image and no box uses; returns bytes freed."""
        in_use = {Path(layer) for rec in self._core.db.all() for layer in rec.layers}
        return self._m.gc(in_use)


class Boxlite:
    """A BoxLite runtime bound to one home directory. No daemon: boxes are its children
    (or, with ``detach=True``, outlive it and can be reattached with ``get``)."""

    _default: ClassVar[Boxlite | None] = None
    _default_options: ClassVar[Options | None] = None

    def __init__(self, options: Options | None = None) -> None:
        self.options = options or Options()
        self.home = Home.resolve(self.options.home_dir)
        registries = list(self.options.image_registries) + load_registries_from_config(self.home.root)
        self._images = ImageManager(self.home.root, registries, uid_base=self.home.uid_base)
        engine = self.options.engine or self.home.config().get("engine")
        self._core = BoxRuntime(self.home, self._images, engine)
        self._commands = 0
        self._exec_errors = 0

    # --- construction ---------------------------------------------------------------------
    @staticmethod
    def default() -> Boxlite:
        """The process-wide runtime (home from ``BOXLITE_HOME`` or ``~/.boxlite``)."""
        if Boxlite._default is None or Boxlite._default._core.closed:
            Boxlite._default = Boxlite(Boxlite._default_options)
        return Boxlite._default

    @staticmethod
    def init_default(options: Options) -> None:
        Boxlite._default_options = options
        Boxlite._default = None

    @staticmethod
    def rest(url: Any, api_key: str | None = None) -> RemoteBoxlite:
        """A runtime talking to a ``boxlite serve`` server (same API as a local one).

        ``url``: ``unix:///path/to.sock`` or ``http(s)://host:port`` (or an object with ``url``
        and ``api_key``/``credential`` attributes, like the reference SDK's rest options)."""
        from ..remote import RemoteBoxlite

        if not isinstance(url, str):
            api_key = api_key or getattr(url, "api_key", None) or getattr(getattr(url, "credential", None), "key", None)
            url = url.url
        return RemoteBoxlite(url, api_key=api_key)

    @property
    def images(self) -> ImagesHandle:
        return ImagesHandle(self._images, self._core)

    # --- boxes ----------------------------------------------------------------------------
    async def create(self, options: BoxOptions, name: str | None = None) -> Box:
        rec = await self._core.create(options, name)
        return Box(self, rec)

    async def get(self, id_or_name: str) -> Box | None:
        self._core.check_open()
        try:
            return Box(self, self._core.record(id_or_name))
        except NotFoundError:
            return None

    async def get_or_create(self, options: BoxOptions, name: str | None = None) -> tuple[Box, bool]:
        if name is not None:
            box = await self.get(name)
            if box is not None:
                return box, False
        return await self.create(options, name), True

    async def get_info(self, id_or_name: str) -> BoxInfo | None:
        box = await self.get(id_or_name)
        return None if box is None else box.info()

    async def list_info(self, state: str | None = None) -> list[BoxInfo]:
        self._core.check_open()
        infos = [record_info(self._core.refresh(rec)) for rec in self._core.db.all()]
        return [i for i in infos if state is None or i.state.status == state]

    async def remove(self, id_or_name: str, force: bool = False) -> None:
        self._core.check_open()
        await self._core.remove(id_or_name, force)

    async def metrics(self) -> RuntimeMetrics:
        counters = self._core.db.counters()
        running = sum(1 for rec in self._core.db.all() if self._core.refresh(rec).state == "running")
        return RuntimeMetrics(
            boxes_created_total=counters.get("boxes_created_total", 0),
            boxes_failed_total=counters.get("boxes_failed_total", 0),
            num_running_boxes=running,
            total_commands_executed=self._commands,
            total_exec_errors=self._exec_errors,
        )

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop the boxes this runtime started (detached ones keep running)."""
        await self._core.shutdown(timeout)

    # --- context managers -------------------------------------------------------------
    def __enter__(self) -> Boxlite:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    async def __aenter__(self) -> Boxlite:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"Boxlite(home={str(self.home.root)!r}, open={not self._core.closed})"
