"""BoxLite: an embeddable, daemonless sandbox runtime.

    import asyncio, boxlite

    async def main():
        async with boxlite.SimpleBox(rootfs_path="/path/to/rootfs") as box:
            print((await box.exec("echo", "hello")).stdout)

    asyncio.run(main())

Public names are imported lazily (PEP 562): ``import boxlite`` alone loads nothing else.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not imported from typing: helper processes importing boxlite.* stay small
if TYPE_CHECKING:
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

_EXPORTS: dict[str, str] = {  # public name -> module defining it (imported on first use)
    "AdvancedBoxOptions": ".api.options",
    "AlreadyExistsError": ".errors",
    "Box": ".api.box",
    "BoxDiedError": ".errors",
    "BoxInfo": ".api.results",
    "BoxMetrics": ".api.results",
    "BoxOptions": ".api.options",
    "BoxStateInfo": ".api.results",
    "Boxlite": ".api.runtime",
    "BoxliteError": ".errors",
    "BrowserBox": ".api.simplebox",
    "CodeBox": ".api.simplebox",
    "ComputerBox": ".api.simplebox",
    "ConfigError": ".errors",
    "CopyOptions": ".api.options",
    "DatabaseError": ".errors",
    "EngineError": ".errors",
    "ExecError": ".errors",
    "ExecResult": ".api.results",
    "ExecStatus": ".api.results",
    "ExecStderr": ".api.execution",
    "ExecStdin": ".api.execution",
    "ExecStdout": ".api.execution",
    "Execution": ".api.execution",
    "ExecutionError": ".errors",
    "ImageError": ".errors",
    "ImageInfo": ".images",
    "ImageRegistry": ".images",
    "InteractiveBox": ".api.interactive",
    "InternalError": ".errors",
    "InvalidArgumentError": ".errors",
    "InvalidStateError": ".errors",
    "NetworkError": ".errors",
    "NetworkSpec": ".api.options",
    "NotFoundError": ".errors",
    "Options": ".api.options",
    "ParseError": ".errors",
    "PortalError": ".errors",
    "RegistryError": ".errors",
    "ResourceExhaustedError": ".errors",
    "RpcError": ".errors",
    "RuntimeMetrics": ".api.results",
    "SecurityOptions": ".api.options",
    "SimpleBox": ".api.simplebox",
    "StoppedError": ".errors",
    "StorageError": ".errors",
    "SyncBox": ".api.sync",
    "SyncBoxlite": ".api.sync",
    "SyncExecution": ".api.sync",
    "SyncSimpleBox": ".api.sync",
    "TimeoutError": ".errors",
    "UnauthorizedError": ".errors",
    "UnsupportedOptionError": ".errors",
}

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


def __getattr__(name: str) -> object:
    """PEP 562: import a public name's module on first use, so that processes importing only a
    submodule (the VM shim and relay, the zygote's host side) do not load the API and its deps."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
