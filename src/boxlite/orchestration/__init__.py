"""BoxLite's ``boxlite.orchestration``: boxes running host-registered handlers that message each
other (docs/orchestration.md).

    async with BoxRuntime() as group:
        worker = await group.create_box("worker")

        @worker.on_message
        def double(sender, data):
            return {"result": data["value"] * 2}

        await worker.run()
"""

from ..api.later import BoxGroup
from .box_runtime import BoxRuntime, ManagedBox, RemoteHandlerError

__all__ = ["BoxGroup", "BoxRuntime", "ManagedBox", "RemoteHandlerError"]
