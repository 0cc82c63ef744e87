"""The KVM probe's QEMU never outlives the process that probes (issue 19): a guest that KVM
cannot run hangs at 100 % CPU on some hosts, and a probe killed mid-boot once left one running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PROBE = """
import sys
from boxlite.engines.vm import accel
from boxlite.runtime_artifact import locate
print("probing", flush=True)
accel._probe(locate())
"""


def _probe_qemus() -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-system" in cmdline and b"boxlite-kvm-probe-" in cmdline:
            found.append(int(pid))
    return found


def test_killed_prober_leaves_no_qemu() -> None:
    before = set(_probe_qemus())
    proc = subprocess.Popen([sys.executable, "-c", PROBE], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "probing"
    deadline = time.monotonic() + 10
    while not set(_probe_qemus()) - before:
        assert time.monotonic() < deadline, "the probe never started QEMU"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 5
    while set(_probe_qemus()) - before:
        assert time.monotonic() < deadline, "the probe's QEMU outlived the process that started it"
        time.sleep(0.05)
