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
    from .api.advanced import ContainerCapabilities, HealthCheckOptions
    from .api.box import Box
    from .api.browserbox import BrowserBox
    from .api.computerbox import ComputerBox
    from .api.credential import AccessToken, ApiKeyCredential, BoxliteRestOptions, Credential
    from .api.execution import ExecStderr, ExecStdin, ExecStdout, Execution
    from .api.interactive import InteractiveBox
    from .api.later import (
        BoxGroup,
        BrowserBoxOptions,
        Secret,
    )
    from .api.network import BoxConnection, BoxTunnel, NetworkHandle
    from .api.options import (
        AdvancedBoxOptions,
        BoxOptions,
        CloneOptions,
        CopyOptions,
        ExportOptions,
        NetworkSpec,
        Options,
        SecurityOptions,
        SnapshotOptions,
    )
    from .api.results import (
        BoxInfo,
        BoxMetrics,
        BoxStateInfo,
        ExecResult,
        ExecStatus,
        HealthState,
        HealthStatus,
        NetworkInfo,
        PublishedPort,
        RuntimeMetrics,
        SnapshotInfo,
    )
    from .api.runtime import Boxlite, ImageHandle, ImagePullResult, cluster
    from .api.simplebox import CodeBox, SimpleBox
    from .api.skillbox import SkillBox, SyncSkillBox
    from .api.snapshots import SnapshotHandle
    from .api.sync import (
        SyncBox,
        SyncBoxlite,
        SyncCodeBox,
        SyncExecStderr,
        SyncExecStdout,
        SyncExecution,
        SyncImageHandle,
        SyncNetworkHandle,
        SyncSimpleBox,
    )
    from .api.volumes import VolumeHandle, VolumeInfo
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
        PermissionDeniedError,
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
    from .orchestration import BoxRuntime, ManagedBox

_EXPORTS: dict[str, str] = {  # public name -> module defining it (imported on first use)
    "AccessToken": ".api.credential",
    "AdvancedBoxOptions": ".api.options",
    "AlreadyExistsError": ".errors",
    "ApiKeyCredential": ".api.credential",
    "Box": ".api.box",
    "BoxConnection": ".api.network",
    "BoxDiedError": ".errors",
    "BoxGroup": ".api.later",
    "BoxInfo": ".api.results",
    "BoxMetrics": ".api.results",
    "BoxOptions": ".api.options",
    "BoxRuntime": ".orchestration",
    "BoxStateInfo": ".api.results",
    "BoxTunnel": ".api.network",
    "Boxlite": ".api.runtime",
    "BoxliteError": ".errors",
    "BoxliteRestOptions": ".api.credential",
    "BrowserBox": ".api.browserbox",
    "BrowserBoxOptions": ".api.later",
    "CloneOptions": ".api.options",
    "CodeBox": ".api.simplebox",
    "ComputerBox": ".api.computerbox",
    "ConfigError": ".errors",
    "ContainerCapabilities": ".api.advanced",
    "CopyOptions": ".api.options",
    "Credential": ".api.credential",
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
    "ExportOptions": ".api.options",
    "HealthCheckOptions": ".api.advanced",
    "HealthState": ".api.results",
    "HealthStatus": ".api.results",
    "ImageError": ".errors",
    "ImageHandle": ".api.runtime",
    "ImageInfo": ".images",
    "ImagePullResult": ".api.runtime",
    "ImageRegistry": ".images",
    "InteractiveBox": ".api.interactive",
    "InternalError": ".errors",
    "InvalidArgumentError": ".errors",
    "InvalidStateError": ".errors",
    "ManagedBox": ".orchestration",
    "NetworkError": ".errors",
    "NetworkHandle": ".api.network",
    "NetworkInfo": ".api.results",
    "NetworkSpec": ".api.options",
    "NotFoundError": ".errors",
    "Options": ".api.options",
    "ParseError": ".errors",
    "PermissionDeniedError": ".errors",
    "PortalError": ".errors",
    "PublishedPort": ".api.results",
    "RegistryError": ".errors",
    "ResourceExhaustedError": ".errors",
    "RpcError": ".errors",
    "RuntimeMetrics": ".api.results",
    "Secret": ".api.later",
    "SecurityOptions": ".api.options",
    "SimpleBox": ".api.simplebox",
    "SkillBox": ".api.skillbox",
    "SnapshotHandle": ".api.snapshots",
    "SnapshotInfo": ".api.results",
    "SnapshotOptions": ".api.options",
    "StoppedError": ".errors",
    "StorageError": ".errors",
    "SyncBox": ".api.sync",
    "SyncBoxlite": ".api.sync",
    "SyncCodeBox": ".api.sync",
    "SyncExecStderr": ".api.sync",
    "SyncExecStdout": ".api.sync",
    "SyncExecution": ".api.sync",
    "SyncImageHandle": ".api.sync",
    "SyncNetworkHandle": ".api.sync",
    "SyncSimpleBox": ".api.sync",
    "SyncSkillBox": ".api.skillbox",
    "TimeoutError": ".errors",
    "UnauthorizedError": ".errors",
    "UnsupportedOptionError": ".errors",
    "VolumeHandle": ".api.volumes",
    "VolumeInfo": ".api.volumes",
    "cluster": ".api.runtime",
}

__version__ = "0.1.0"

__all__ = [
    "AccessToken",
    "AdvancedBoxOptions",
    "AlreadyExistsError",
    "ApiKeyCredential",
    "Box",
    "BoxConnection",
    "BoxDiedError",
    "BoxGroup",
    "BoxInfo",
    "BoxMetrics",
    "BoxOptions",
    "BoxRuntime",
    "BoxStateInfo",
    "BoxTunnel",
    "Boxlite",
    "BoxliteError",
    "BoxliteRestOptions",
    "BrowserBox",
    "BrowserBoxOptions",
    "CloneOptions",
    "CodeBox",
    "ComputerBox",
    "ConfigError",
    "ContainerCapabilities",
    "CopyOptions",
    "Credential",
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
    "ExportOptions",
    "HealthCheckOptions",
    "HealthState",
    "HealthStatus",
    "ImageError",
    "ImageHandle",
    "ImageInfo",
    "ImagePullResult",
    "ImageRegistry",
    "InteractiveBox",
    "InternalError",
    "InvalidArgumentError",
    "InvalidStateError",
    "ManagedBox",
    "NetworkError",
    "NetworkHandle",
    "NetworkInfo",
    "NetworkSpec",
    "NotFoundError",
    "Options",
    "ParseError",
    "PermissionDeniedError",
    "PortalError",
    "PublishedPort",
    "RegistryError",
    "ResourceExhaustedError",
    "RpcError",
    "RuntimeMetrics",
    "Secret",
    "SecurityOptions",
    "SimpleBox",
    "SkillBox",
    "SnapshotHandle",
    "SnapshotInfo",
    "SnapshotOptions",
    "StoppedError",
    "StorageError",
    "SyncBox",
    "SyncBoxlite",
    "SyncCodeBox",
    "SyncExecStderr",
    "SyncExecStdout",
    "SyncExecution",
    "SyncImageHandle",
    "SyncNetworkHandle",
    "SyncSimpleBox",
    "SyncSkillBox",
    "TimeoutError",
    "UnauthorizedError",
    "UnsupportedOptionError",
    "VolumeHandle",
    "VolumeInfo",
    "cluster",
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
