"""Engine selection: names to engine instances, and what "auto" means on this host."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from ..engines.base import Engine
from ..errors import ConfigError

BUILTIN = ("auto", "namespace", "vm")
_registered: dict[str, Callable[[], Engine]] = {}


def register_engine(name: str, factory: Callable[[], Engine]) -> None:
    """Make another engine selectable by ``name`` in this process (the tests' fake engine)."""
    if name in BUILTIN:
        raise ConfigError(f"engine name {name!r} is taken")
    _registered[name] = factory
    select_engine.cache_clear()


@cache
def select_engine(name: str, home: str | None = None) -> Engine:
    """The engine called ``name``; "auto" is the VM engine when KVM works here, else namespace.
    ``home``: the runtime home whose cache holds the KVM verdict ("auto" only; None: the
    default home), the same one ``boxlite run``'s zygote pre-start reads."""
    if name in _registered:
        return _registered[name]()
    if name == "auto":
        return select_engine("vm" if _vm_with_kvm(home) else "namespace")
    if name == "namespace":
        from ..engines.namespace.engine import NamespaceEngine

        return NamespaceEngine()
    if name == "vm":
        from ..engines.vm import VmEngine

        return VmEngine()
    raise ConfigError(f"unknown engine {name!r} (expected auto, namespace or vm)")


def _vm_with_kvm(home: str | None) -> bool:
    """True when the VM engine is installed and a cached probe says KVM boots our guest."""
    try:
        from ..engines.vm import kvm_usable
    except ImportError:
        return False
    try:
        return bool(kvm_usable(home))
    except Exception:
        return False
