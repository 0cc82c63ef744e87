"""``Boxlite``: the runtime object users create boxes with (on this machine, or on a server)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from ..backends.base import Backend, ExecCounters, ImagesBackend
from ..errors import InvalidStateError
from ..images.types import ImageInfo
from .box import Box
from .options import BoxOptions, Options
from .results import BoxInfo, RuntimeMetrics

if TYPE_CHECKING:
    from ..backends.local import LocalBackend
    from ..runtime.home import Home
    from ..runtime.lifecycle import BoxRuntime
    from .credential import BoxliteRestOptions
    from .remote import RemoteBoxlite
    from .volumes import VolumeHandle


class Boxlite:
    """A BoxLite runtime. ``Boxlite(options)`` is bound to one home directory on this machine:
    no daemon, boxes are its children (or, with ``detach=True``, outlive it and can be
    reattached with ``get``). ``Boxlite.rest(url)`` is the same API on a ``boxlite serve`` server."""

    _default: ClassVar[Boxlite | None] = None
    _default_options: ClassVar[Options | None] = None
    _box_type: ClassVar[type[Box]] = Box

    def __init__(self, options: Options | None = None, *, backend: Backend | None = None) -> None:
        self.options = options or Options()
        if backend is None:
            from ..backends.local import LocalBackend

            backend = LocalBackend(self.options)
        self._backend = backend
        self._counted = ExecCounters()  # executions of this runtime's box handles

    # --- construction ---------------------------------------------------------------------
    @staticmethod
    def default() -> Boxlite:
        """The process-wide runtime (home from ``BOXLITE_HOME`` or ``~/.boxlite``)."""
        if Boxlite._default is None or Boxlite._default._backend.closed:
            Boxlite._default = Boxlite(Boxlite._default_options)
        return Boxlite._default

    @staticmethod
    def init_default(options: Options) -> None:
        Boxlite._default_options = options
        Boxlite._default = None

    @staticmethod
    def rest(url: str | BoxliteRestOptions | Any, api_key: str | None = None) -> RemoteBoxlite:
        """A runtime talking to a ``boxlite serve`` server (same API as a local one).

        BoxLite's form ``Boxlite.rest(BoxliteRestOptions(url, credential=ApiKeyCredential(k)))``
        and ours ``Boxlite.rest("http(s)://host:port" | "unix:///path.sock", api_key)`` both work."""
        from ..errors import UnsupportedOptionError
        from .credential import BoxliteRestOptions
        from .remote import RemoteBoxlite

        if isinstance(url, BoxliteRestOptions):
            if url.path_prefix:
                raise UnsupportedOptionError("BoxliteRestOptions.path_prefix", "our server has no tenant URL segment")
            return RemoteBoxlite(url.url, api_key=api_key or url.api_key())
        if not isinstance(url, str):  # a look-alike options object
            get_token = getattr(getattr(url, "credential", None), "get_token", None)
            token = get_token().token if callable(get_token) else None
            api_key = api_key or getattr(url, "api_key", None) or token
            url = url.url
        return RemoteBoxlite(url, api_key=api_key)

    @staticmethod
    def ray(address: str = "auto", **options: Any) -> Boxlite:
        """A runtime whose boxes are placed on the nodes of a Ray cluster (same API as a local one).

        ``options``: ``backends.ray.RayOptions`` (strategy, max_boxes_per_node, engine, home_dir, ...)."""
        from ..backends.ray import RayBackend, RayOptions
        from ..errors import ConfigError

        try:
            ray_options = RayOptions(address=address, **options)
        except TypeError as e:
            raise ConfigError(f"Boxlite.ray: {e}") from None
        return Boxlite(backend=RayBackend(ray_options))

    @property
    def images(self) -> ImagesBackend:
        return self._backend.images

    @property
    def volumes(self) -> VolumeHandle:
        """BoxLite's named volumes (api/volumes.py): create, list, get, remove."""
        from .volumes import VolumeHandle

        return VolumeHandle(self)

    # --- a local runtime's home (the CLI and tests look inside it) -------------------------
    def _local(self) -> LocalBackend:
        from ..backends.local import LocalBackend

        if not isinstance(self._backend, LocalBackend):
            raise InvalidStateError(f"{self!r} has no home on this machine")
        return self._backend

    @property
    def home(self) -> Home:
        return self._local().home

    @property
    def _core(self) -> BoxRuntime:
        return self._local().core

    # --- boxes ----------------------------------------------------------------------------
    async def create(self, options: BoxOptions, name: str | None = None) -> Box:
        return self._box_type(self, await self._backend.create(options, name))

    async def get(self, id_or_name: str) -> Box | None:
        info = await self._backend.get(id_or_name)
        return None if info is None else self._box_type(self, info)

    async def get_or_create(self, options: BoxOptions, name: str | None = None) -> tuple[Box, bool]:
        if name is not None:
            box = await self.get(name)
            if box is not None:
                return box, False
        return await self.create(options, name), True

    async def get_info(self, id_or_name: str) -> BoxInfo | None:
        return await self._backend.get(id_or_name)

    async def list_info(self, state: str | None = None) -> list[BoxInfo]:
        return await self._backend.list(state)

    async def remove(self, id_or_name: str, force: bool = False) -> None:
        await self._backend.remove(id_or_name, force)

    async def metrics(self) -> RuntimeMetrics:
        return await self._backend.metrics(self._counted)

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop the boxes this runtime started (detached ones keep running)."""
        await self._backend.shutdown(timeout)

    async def import_box(
        self, archive_path: str, name: str | None = None, *, untrusted: bool = False, engine: str | None = None
    ) -> Box:
        """A new stopped box from a ``.boxlite`` archive (``Box.export``). The archive is checked
        (digests, paths, sizes) before anything is kept; ``untrusted``: it may not name host paths.
        ``engine``: the new box's (default: the archive's; a namespace box can become a VM box)."""
        return self._box_type(self, await self._backend.import_box(str(archive_path), name, untrusted, engine))

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
        return f"{type(self).__name__}({self._backend.describe()})"


ImageHandle = ImagesBackend
"""BoxLite's name for ``runtime.images`` (pull, list, get, remove, ...)."""
ImagePullResult = ImageInfo
"""What ``runtime.images.pull`` returns: an ``ImageInfo`` (``config_digest`` as in BoxLite; no ``layer_count``)."""


def cluster(address: str = "auto", **options: Any) -> Boxlite:
    """``boxlite.cluster(address)``: the cluster runtime, ``Boxlite.ray(address, **options)``
    (Ray is the only cluster engine; a function of the package so scripts read
    ``rt = boxlite.cluster("ray://head:10001")``)."""
    return Boxlite.ray(address, **options)
