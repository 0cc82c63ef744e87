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
    from ...runtime_artifact import locate
    from .accel import choose

    try:
        artifact = locate()
    except EngineError:
        return False
    base = Path(home or os.environ.get("BOXLITE_HOME") or Path.home() / ".boxlite")
    return choose(artifact, base / "cache" / "vm", announce=False).name == "kvm"
