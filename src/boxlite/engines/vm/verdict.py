"""The cached KVM/TCG verdict, readable without the VM engine: ``engine="auto"`` asks it on every
namespace ``boxlite run`` (engines/vm/__init__.kvm_known), so this module imports nothing of QEMU's
configuration or of the probe (engines/vm/accel.py boots the probe and writes the verdict)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
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


def host_cache_dir() -> Path | None:
    """Verdicts shared by all of this user's homes: the probe's answer is a fact of the host
    (kernel, QEMU, host kernel), so a new home (a test's, a tenant's) need not boot it again
    (~4 s where KVM hangs). ``$XDG_CACHE_HOME/boxlite/vm-accel``, beside the VM templates."""
    try:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    except RuntimeError:  # no $HOME and no passwd entry: the home's cache alone
        return None
    return Path(xdg) / "boxlite" / "vm-accel"


def _read(path: Path, own_only: bool) -> Accel | None:
    """The verdict stored at ``path``; ``own_only``: only from a regular file of this user that
    no one else may write (the shared cache is outside the runtime's home)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if own_only and (st.st_uid != os.geteuid() or st.st_mode & 0o022 or not stat.S_ISREG(st.st_mode)):
            return None
        data = json.loads(os.read(fd, 4096))
        name = str(data["name"])
        return Accel(name, str(data["reason"])) if name in ("kvm", "tcg") else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    finally:
        os.close(fd)


def cached_verdict(manifest: dict[str, Any], cache_dir: Path) -> Accel | None:
    """The choice without probing: forced, no /dev/kvm, or the cached probe verdict for this
    manifest's kernel (the home's, else this user's shared one); None when only a probe boot
    can tell. Needs no verified artifact, so engine="auto" on a host whose verdict is TCG never
    hashes the artifact."""
    forced = os.environ.get("BOXLITE_VM_ACCEL")
    if forced in ("kvm", "tcg"):
        return Accel(forced, "forced by BOXLITE_VM_ACCEL")
    if not kvm_device_usable():
        return Accel("tcg", "/dev/kvm is not available")
    known = _read(verdict_path(manifest, cache_dir), own_only=False)
    shared = host_cache_dir()
    if known is None and shared is not None:
        known = _read(verdict_path(manifest, shared), own_only=True)
    return known


def store_verdict(result: Accel, manifest: dict[str, Any], cache_dir: Path) -> None:
    """Keep a probe's verdict in the home (required) and in the user's shared cache (best effort)."""
    shared = host_cache_dir()
    for directory in (cache_dir, shared):
        if directory is None:
            continue
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = verdict_path(manifest, directory)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"name": result.name, "reason": result.reason}))
            tmp.chmod(0o644)
            tmp.rename(path)
        except OSError:
            if directory is cache_dir:
                raise
