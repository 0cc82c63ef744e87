"""QEMU micro-VM engine (KVM when a probe boot works, else TCG). See docs/vm.md."""

from __future__ import annotations

TYPE_CHECKING = False  # no typing import: the relay (engines/vm/relayd.py) imports this package
if TYPE_CHECKING:
    from os import PathLike
    from pathlib import Path

    from .engine import VmEngine

__all__ = ["VmEngine", "kvm_known", "kvm_usable"]


def __getattr__(name: str) -> object:
    """``VmEngine`` on first use (PEP 562): the shim and relay import submodules only."""
    if name != "VmEngine":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from .engine import VmEngine

    return VmEngine


def _cache_dir(home: str | PathLike[str] | None) -> Path:
    import os
    from pathlib import Path

    return Path(home or os.environ.get("BOXLITE_HOME") or Path.home() / ".boxlite") / "cache" / "vm"


def kvm_known(home: str | PathLike[str] | None = None) -> bool | None:
    """:func:`kvm_usable`'s answer when known without hashing the artifact or probing (no
    usable /dev/kvm, no artifact, or a cached verdict for its kernel); None otherwise."""
    from ...runtime_artifact import peek_manifest
    from .verdict import cached_verdict, kvm_device_usable

    if not kvm_device_usable():
        return False
    manifest = peek_manifest()
    if manifest is None:
        return False
    known = cached_verdict(manifest, _cache_dir(home))
    return None if known is None else known.name == "kvm"


def kvm_usable(home: str | PathLike[str] | None = None) -> bool:
    """True when a (cached) probe boot of our guest under KVM succeeds on this host.

    Cheap when ``/dev/kvm`` is absent or the verdict is cached under the home (a TCG verdict
    does not even hash the artifact: e.g. kvm-pvm hosts); otherwise it verifies the artifact
    and boots the guest once (a few seconds at most). False when no runtime artifact is built.
    """
    if kvm_known(home) is False:
        return False
    from ...errors import EngineError
    from ...runtime_artifact import locate
    from .accel import choose

    try:
        artifact = locate()
    except EngineError:
        return False
    return choose(artifact, _cache_dir(home), announce=False).name == "kvm"
