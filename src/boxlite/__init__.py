"""BoxLite: an embeddable, daemonless sandbox runtime.

    import asyncio, boxlite

    async def main():
        async with boxlite.SimpleBox(rootfs_path="/path/to/rootfs") as box:
            print((await box.exec("echo", "hello")).stdout)

    asyncio.run(main())
"""

from __future__ import annotations

from .api.box import Box
from .api.execution import ExecStderr, ExecStdin, ExecStdout, Execution
from .api.interactive import InteractiveBox
from .api.options import (
    AdvancedBoxOptions,
    BoxOptions,
    CopyOptions,
    NetworkSpec,
    Options,
    SecurityOptions,
)
from .api.results import BoxInfo, BoxMetrics, BoxStateInfo, ExecResult, ExecStatus, RuntimeMetrics
from .api.runtime import Boxlite
from .api.simplebox import BrowserBox, CodeBox, ComputerBox, SimpleBox
from .api.sync import SyncBox, SyncBoxlite, SyncExecution, SyncSimpleBox
from .errors import (
    AlreadyExistsError,
    BoxDiedError,
    BoxliteError,
    ConfigError,
    DatabaseError,
    EngineError,
    ExecError,
    ExecutionError,
    ImageError,
    InternalError,
    InvalidArgumentError,
    InvalidStateError,
    NetworkError,
    NotFoundError,
    ParseError,
    PortalError,
    RegistryError,
    ResourceExhaustedError,
    RpcError,
    StoppedError,
    StorageError,
    TimeoutError,
    UnauthorizedError,
    UnsupportedOptionError,
)
from .images import ImageInfo, ImageRegistry

__version__ = "0.1.0"

__all__ = [
    "AdvancedBoxOptions",
    "AlreadyExistsError",
    "Box",
    "BoxDiedError",
    "BoxInfo",
    "BoxMetrics",
    "BoxOptions",
    "BoxStateInfo",
    "Boxlite",
    "BoxliteError",
    "BrowserBox",
    "CodeBox",
    "ComputerBox",
    "ConfigError",
    "CopyOptions",
    "DatabaseError",
    "EngineError",
    "ExecError",
    "ExecResult",
    "ExecStatus",
    "ExecStderr",
    "ExecStdin",
    "ExecStdout",
    "Execution",
    "ExecutionError",
    "ImageError",
    "ImageInfo",
    "ImageRegistry",
    "InteractiveBox",
    "InternalError",
    "InvalidArgumentError",
    "InvalidStateError",
    "NetworkError",
    "NetworkSpec",
    "NotFoundError",
    "Options",
    "ParseError",
    "PortalError",
    "RegistryError",
    "ResourceExhaustedError",
    "RpcError",
    "RuntimeMetrics",
    "SecurityOptions",
    "SimpleBox",
    "StoppedError",
    "StorageError",
    "SyncBox",
    "SyncBoxlite",
    "SyncExecution",
    "SyncSimpleBox",
    "TimeoutError",
    "UnauthorizedError",
    "UnsupportedOptionError",
]  # fmt: skip
