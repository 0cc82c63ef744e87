"""QEMU micro-VM engine (KVM when a probe boot works, else TCG). See docs/vm.md."""

from __future__ import annotations

import os
from pathlib import Path

from .engine import VmEngine

__all__ = ["VmEngine", "kvm_usable"]


def kvm_usable(home: str | os.PathLike[str] | None = None) -> bool:
    """True when a (cached) probe boot of our guest under KVM succeeds on this host.

    Cheap when ``/dev/kvm`` is absent or the verdict is cached under the home; otherwise it
    boots the guest once (a few seconds at most). False when no runtime artifact is built.
    """
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
