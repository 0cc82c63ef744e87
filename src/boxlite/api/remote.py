"""``Boxlite``/``Box`` over the REST backend, under the names ``Boxlite.rest`` returns.

They add nothing but a constructor taking a server URL (resp. a ``BoxInfo``) and a type to
check against: the behaviour is ``Boxlite``'s and ``Box``'s, over ``backends.rest``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..backends.rest import RestBackend
from .box import Box
from .results import BoxInfo
from .runtime import Boxlite


class RemoteBox(Box):
    """One box of a ``boxlite serve`` server."""

    def __init__(self, runtime: Boxlite, info: BoxInfo) -> None:
        super().__init__(runtime, info)


class RemoteBoxlite(Boxlite):
    """A runtime living in a server process; URL ``unix:///path.sock`` or ``http(s)://host:port``."""

    _box_type: ClassVar[type[Box]] = RemoteBox

    def __init__(self, url: str, api_key: str | None = None) -> None:
        self._rest = RestBackend(url, api_key)
        super().__init__(backend=self._rest)

    @property
    def url(self) -> str:
        return self._rest.url

    async def tunnel_uri(self, box_id: str, port: int) -> str:
        """A URI on the server that reaches TCP ``port`` inside the running box (``boxlite network
        tunnel``; BoxLite's REST tunnel endpoint): ``http://boxlite:<token>@host:port``. A
        capability: whoever holds it reaches the service until the box stops."""
        from .network import check_port

        return await self._rest.tunnel_uri(box_id, check_port(port))

    async def whoami(self) -> dict[str, Any] | None:
        """Who the server takes this client's key for (its ``GET /v1/me``: ``sub``,
        ``display_name``, ``path_prefix``, ...); None for a server without that route.
        ``UnauthorizedError`` when the key is refused (``boxlite auth login`` checks keys so)."""
        return await self._rest.whoami()
