"""QEMU micro-VM engine (KVM when a probe boot works, else TCG). See docs/vm.md."""

from .engine import VmEngine

__all__ = ["VmEngine"]
