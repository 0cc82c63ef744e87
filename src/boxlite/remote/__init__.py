"""Remote SDK: the ``Boxlite``/``Box``/``Execution`` API over a ``boxlite serve`` server.

rt = boxlite.Boxlite.rest("unix:///home/me/.boxlite/boxlite.sock")
async with boxlite.SimpleBox(rootfs_path="/srv/rootfs", runtime=rt) as box:
    print((await box.exec("echo", "hi")).stdout)
"""

from __future__ import annotations

from ..errors import UnauthorizedError
from .box import RemoteBox
from .channel import RemoteChannel
from .runtime import RemoteBoxlite, RemoteImages

__all__ = ["RemoteBox", "RemoteBoxlite", "RemoteChannel", "RemoteImages", "UnauthorizedError"]
