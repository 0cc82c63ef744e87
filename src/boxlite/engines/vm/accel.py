"""Choose KVM or TCG: KVM only if a probe boot of our own guest works within seconds.

``/dev/kvm`` existing proves little (e.g. ``kvm-pvm`` hosts expose it but cannot run our
guest), so the verdict comes from a real boot with ``boxlite.probe=1`` (vminit prints a marker
and powers off at once). It is cached per (kernel, QEMU, host kernel) under the home.
``BOXLITE_VM_ACCEL=kvm|tcg`` forces the choice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ...runtime_artifact import RuntimeArtifact
from .qemu import VmConfig, qemu_argv, qemu_binary

log = logging.getLogger("boxlite.vm")
PROBE_MARKER = b"boxlite-probe-ok"
PROBE_TIMEOUT = 4.0
_announced = False


@dataclass(frozen=True)
class Accel:
    name: str  # "kvm" | "tcg"
    reason: str


def _qemu_version() -> str:
    """Identity of the QEMU binary for the probe cache: its path, size and mtime (a stat is
    ~1000x cheaper than running ``--version`` in every process that picks an engine)."""
    try:
        binary = qemu_binary()
        st = os.stat(binary)
    except OSError:
        return "?"
    return f"{binary}:{st.st_size}:{st.st_mtime_ns}"


def _probe(artifact: RuntimeArtifact) -> Accel:
    with tempfile.TemporaryDirectory(prefix="boxlite-kvm-probe-") as tmp:
        console = Path(tmp) / "console.log"
        cfg = VmConfig(
            kernel=str(artifact.kernel),
            initramfs=str(artifact.initramfs),
            console=str(console),
            cpus=1,
            memory_mib=256,
            accel="kvm",
            extra_cmdline="boxlite.probe=1",
        )
        argv = qemu_argv(cfg, agent_fd=None, qmp_fd=None)
        t0 = time.monotonic()
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except OSError as e:
            return Accel("tcg", f"KVM probe could not start QEMU: {e}")
        try:
            while time.monotonic() - t0 < PROBE_TIMEOUT:
                if console.exists() and PROBE_MARKER in console.read_bytes():
                    return Accel("kvm", f"KVM probe boot succeeded in {time.monotonic() - t0:.2f}s")
                if proc.poll() is not None:
                    err = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace").strip()
                    return Accel("tcg", f"KVM probe boot failed: {err.splitlines()[-1] if err else 'no marker'}")
                time.sleep(0.05)
            return Accel("tcg", f"KVM probe boot showed no sign of life within {PROBE_TIMEOUT:.0f}s")
        finally:
            proc.kill()
            proc.wait()


def choose(artifact: RuntimeArtifact, cache_dir: Path, announce: bool = True) -> Accel:
    """KVM if usable (cached probe verdict), else TCG; logs the choice once per process
    (``announce=False``: only asking, e.g. for engine="auto", which then may not use the VM)."""
    forced = os.environ.get("BOXLITE_VM_ACCEL")
    if forced in ("kvm", "tcg"):
        result = Accel(forced, "forced by BOXLITE_VM_ACCEL")
    elif not os.access("/dev/kvm", os.R_OK | os.W_OK):
        result = Accel("tcg", "/dev/kvm is not available")
    else:
        key = hashlib.sha256(
            f"{artifact.manifest['files']['vmlinux']}\0{_qemu_version()}\0{os.uname().release}".encode()
        ).hexdigest()[:16]
        path = cache_dir / f"accel-{key}.json"
        try:
            data = json.loads(path.read_text())
            result = Accel(str(data["name"]), str(data["reason"]))
        except (OSError, ValueError, KeyError):
            result = _probe(artifact)
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"name": result.name, "reason": result.reason}))
            tmp.rename(path)
    global _announced
    if announce and not _announced:
        _announced = True
        if result.name == "tcg":
            log.warning("VM engine: using TCG software emulation (%s); boxes boot and run slower", result.reason)
        else:
            log.info("VM engine: using KVM (%s)", result.reason)
    return result
