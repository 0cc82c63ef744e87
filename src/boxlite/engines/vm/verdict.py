"""The cached KVM/TCG verdict, readable without the VM engine: ``engine="auto"`` asks it on every
namespace ``boxlite run`` (engines/vm/__init__.kvm_known), so this module imports nothing of QEMU's
configuration or of the probe (engines/vm/accel.py boots the probe and writes the verdict)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

QEMU = "qemu-system-x86_64"
"""engines/vm/qemu.QEMU (a test keeps them equal)."""


@dataclass(frozen=True)
class Accel:
    name: str  # "kvm" | "tcg"
    reason: str


def qemu_version() -> str:
    """Identity of the QEMU binary for the probe cache: its path, size and mtime (a stat is
    ~1000x cheaper than running ``--version`` in every process that picks an engine)."""
    binary = shutil.which(QEMU)
    if binary is None:
        return "?"
    try:
        st = os.stat(binary)
    except OSError:
        return "?"
    return f"{binary}:{st.st_size}:{st.st_mtime_ns}"


def kvm_device_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def verdict_path(manifest: dict[str, Any], cache_dir: Path) -> Path:
    key = hashlib.sha256(
        f"{manifest['files']['vmlinux']}\0{qemu_version()}\0{os.uname().release}".encode()
    ).hexdigest()[:16]
    return cache_dir / f"accel-{key}.json"


def cached_verdict(manifest: dict[str, Any], cache_dir: Path) -> Accel | None:
    """The choice without probing: forced, no /dev/kvm, or the cached probe verdict for this
    manifest's kernel; None when only a probe boot can tell. Needs no verified artifact, so
    engine="auto" on a host whose verdict is TCG never hashes the artifact."""
    forced = os.environ.get("BOXLITE_VM_ACCEL")
    if forced in ("kvm", "tcg"):
        return Accel(forced, "forced by BOXLITE_VM_ACCEL")
    if not kvm_device_usable():
        return Accel("tcg", "/dev/kvm is not available")
    try:
        data = json.loads(verdict_path(manifest, cache_dir).read_text())
        return Accel(str(data["name"]), str(data["reason"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
