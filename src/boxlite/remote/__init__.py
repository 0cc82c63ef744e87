"""Old import path of the REST client (kept for compatibility): ``boxlite.Boxlite.rest(url)``
returns a ``RemoteBoxlite``; the code lives in ``boxlite.api.remote`` and ``boxlite.backends.rest``.

rt = boxlite.Boxlite.rest("unix:///home/me/.boxlite/boxlite.sock")
async with boxlite.SimpleBox(rootfs_path="/srv/rootfs", runtime=rt) as box:
    print((await box.exec("echo", "hi")).stdout)
"""

from __future__ import annotations

from ..api.remote import RemoteBox, RemoteBoxlite
from ..backends.rest import RemoteChannel
from ..backends.rest import RestImages as RemoteImages
from ..errors import UnauthorizedError

__all__ = ["RemoteBox", "RemoteBoxlite", "RemoteChannel", "RemoteImages", "UnauthorizedError"]
