"""Engine selection: names to engine instances, and what "auto" means on this host."""

from __future__ import annotations

from functools import cache

from ..engines.base import Engine
from ..errors import ConfigError


@cache
def select_engine(name: str) -> Engine:
    """The engine called ``name``; "auto" is the VM engine when KVM works here, else namespace."""
    if name == "auto":
        return select_engine("vm" if _vm_with_kvm() else "namespace")
    if name == "namespace":
        from ..engines.namespace.engine import NamespaceEngine

        return NamespaceEngine()
    if name == "vm":
        from ..engines.vm import VmEngine

        return VmEngine()
    raise ConfigError(f"unknown engine {name!r} (expected auto, namespace or vm)")


def _vm_with_kvm() -> bool:
    """True when the VM engine is installed and a cached probe says KVM boots our guest."""
    try:
        from ..engines.vm import kvm_usable
    except ImportError:
        return False
    try:
        return bool(kvm_usable())
    except Exception:
        return False
