"""QEMU micro-VM engine (KVM when a probe boot works, else TCG). See docs/vm.md."""

from __future__ import annotations

TYPE_CHECKING = False  # no typing import: the relay (engines/vm/relayd.py) imports this package
if TYPE_CHECKING:
    from os import PathLike

    from .engine import VmEngine

__all__ = ["VmEngine", "kvm_usable"]


def __getattr__(name: str) -> object:
    """``VmEngine`` on first use (PEP 562): the shim and relay import submodules only."""
    if name != "VmEngine":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from .engine import VmEngine

    return VmEngine


def kvm_usable(home: str | PathLike[str] | None = None) -> bool:
    """True when a (cached) probe boot of our guest under KVM succeeds on this host.

    Cheap when ``/dev/kvm`` is absent or the verdict is cached under the home; otherwise it
    boots the guest once (a few seconds at most). False when no runtime artifact is built.
    """
    import os
    from pathlib import Path

    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    from ...errors import EngineError
    from ...runtime_artifact import locate, peek_manifest
    from .accel import cached_verdict, choose

    base = Path(home or os.environ.get("BOXLITE_HOME") or Path.home() / ".boxlite")
    cache_dir = base / "cache" / "vm"
    manifest = peek_manifest()
    if manifest is None:
        return False
    known = cached_verdict(manifest, cache_dir)
    if known is not None and known.name != "kvm":  # e.g. kvm-pvm: hashing the artifact would change nothing
        return False
    try:
        artifact = locate()
    except EngineError:
        return False
    return choose(artifact, cache_dir, announce=False).name == "kvm"
