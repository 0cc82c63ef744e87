"""Choose KVM or TCG: KVM only if a probe boot of our own guest works within seconds.

``/dev/kvm`` existing proves little (e.g. ``kvm-pvm`` hosts expose it but cannot run our
guest), so the verdict comes from a real boot with ``boxlite.probe=1`` (vminit prints a marker
and powers off at once). It is cached per (kernel, QEMU, host kernel) under the home and in
the user's cache shared by all homes (verdict.py), so a host is probed once, not once per home.
``BOXLITE_VM_ACCEL=kvm|tcg`` forces the choice. Falling back to TCG is said once per home, in
plain words, on stderr (``tcg-notice`` marks that it was); the probe's details stay in the cache.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ...runtime_artifact import RuntimeArtifact
from .qemu import VmConfig, qemu_argv
from .verdict import Accel, cached_verdict, store_verdict

log = logging.getLogger("boxlite.vm")
PROBE_MARKER = b"boxlite-probe-ok"
PROBE_TIMEOUT = 4.0
TCG_SLOWDOWN = 10
"""Guest code runs ~7-10x slower under TCG than under KVM (docs/vm.md)."""
NOTICE_MARKER = "tcg-notice"


def _die_with_this_thread() -> None:
    """preexec_fn of the probe's QEMU: a guest KVM cannot run hangs at 100 % CPU (kvm-pvm), so
    if the process probing dies before it kills QEMU, QEMU must die too (SIGKILL when the
    thread that forked it ends; that thread waits for QEMU in :func:`_probe`)."""
    import ctypes

    ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL


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
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                preexec_fn=_die_with_this_thread,
            )
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


def short_reason(reason: str) -> str:
    """The probe's verdict in a few plain words (its raw text may be a QEMU assertion)."""
    if reason.startswith("/dev/kvm"):
        return "no usable /dev/kvm"
    if "could not start QEMU" in reason:
        return "QEMU could not start with KVM"
    if "no sign of life" in reason:
        return "a test boot of the guest kernel under KVM hung"
    if "boot failed" in reason:
        return "a test boot of the guest kernel under KVM crashed"
    return reason.split(":")[0][:80]


def _notice_once(cache_dir: Path, result: Accel) -> None:
    """Say once per home (the first process to create the marker) that VM boxes are emulated."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        os.close(os.open(cache_dir / NOTICE_MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644))
    except OSError:  # shown already (or the home is read-only: better silent than every time)
        return
    print(
        f"boxlite: KVM cannot run guests on this host ({short_reason(result.reason)}); "
        f"VM boxes use software emulation, ~{TCG_SLOWDOWN}\u00d7 slower",
        file=sys.stderr,
        flush=True,
    )


def choose(artifact: RuntimeArtifact, cache_dir: Path, announce: bool = True) -> Accel:
    """KVM if usable (cached probe verdict), else TCG, which is announced once per home
    (``cache_dir`` is under it). ``announce=False``: only asking, e.g. for engine="auto", which
    then may not use the VM."""
    forced = os.environ.get("BOXLITE_VM_ACCEL")
    result = cached_verdict(artifact.manifest, cache_dir)
    if result is None:
        result = _probe(artifact)
        store_verdict(result, artifact.manifest, cache_dir)
    if announce:
        log.debug("VM engine: using %s (%s)", result.name.upper(), result.reason)
        if result.name == "tcg" and not forced:
            _notice_once(cache_dir, result)
    return result
