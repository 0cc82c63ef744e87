"""Snapshot templates: a VM that booted and loaded the agent but saw no box yet, saved once per
shape (artifact, accelerator, vCPUs, memory, disk size, QEMU binary) and restored by every box
of that shape instead of a cold boot. The guest RAM file is mapped copy-on-write by restored
boxes, so pages they only read stay shared in the host page cache.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import IO

from ... import runtime_artifact
from ...agent.protocol import STATUS_TEMPLATE, StatusLine
from ...layout import AGENT_SOCKET_NAME, CONSOLE_LOG_NAME
from .. import diskchain
from ..base import BoxSpec
from .disks import LOWER_CAPACITY
from .qemu import VmConfig, console_tail, host_tsc_khz, qemu_binary

log = logging.getLogger("boxlite.vm")
TEMPLATE_MAX_AGE = 14 * 86400
TEMPLATE_FORMAT = 5  # 2: guest RAM in .ram, mapped by restored boxes; 3: + a NIC; 4: RTC back; 5: no balloon

RunShim = Callable[
    [VmConfig, Path, Path, "int | None", float, "dict[str, object]"],
    Awaitable[tuple["int | None", "StatusLine | None"]],
]
"""``VmEngine._run_shim``: (vm, run dir, agent socket, lifeline fd, timeout, extra conf) -> (pid, final status)."""


def template_dir(spec: BoxSpec) -> Path:
    """Where snapshot templates live. They depend only on the artifact and the VM shape, so
    they are shared by all homes of a user: ``$BOXLITE_VM_TEMPLATES``, else
    ``$XDG_CACHE_HOME/boxlite/vm-templates`` (``~/.cache/...``)."""
    env = os.environ.get("BOXLITE_VM_TEMPLATES")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "boxlite" / "vm-templates"


def snapshots_enabled(spec: BoxSpec) -> bool:
    if os.environ.get("BOXLITE_VM_SNAPSHOT", "1") in ("0", "false", "no"):
        return False
    return spec.vm_snapshot is not False


def remaining(deadline: float) -> float:
    """Seconds left until ``deadline`` (a monotonic time), at least 0.2."""
    return max(0.2, deadline - time.monotonic())


def template_key(artifact: runtime_artifact.RuntimeArtifact, vm: VmConfig, upper_size: int) -> str:
    """What a template's saved machine depends on: the runtime files, the VM's shape, the QEMU
    binary and the host CPU (a guest restored on another CPU keeps the first one's TSC
    calibration, and under KVM its CPU features)."""
    return hashlib.sha256(
        json.dumps(
            [
                artifact.manifest["files"],
                vm.accel,
                vm.cpus,
                vm.memory_mib,
                upper_size,
                LOWER_CAPACITY,
                vm.debug,
                _qemu_identity(),
                host_cpu_identity(),
                TEMPLATE_FORMAT,
            ]
        ).encode()
    ).hexdigest()[:20]


async def ensure(
    spec: BoxSpec, artifact: runtime_artifact.RuntimeArtifact, vm: VmConfig, deadline: float, run_shim: RunShim
) -> Path | None:
    """The snapshot to restore for ``vm`` (created on first use with ``run_shim``), or None if
    unavailable."""
    upper_size = diskchain.virtual_size(Path(str(vm.upper_disk)), vm.upper_format)
    key = template_key(artifact, vm, upper_size)
    tdir = template_dir(spec)
    path = tdir / f"{key}.snap"
    ram = path.with_suffix(".ram")  # renamed into place last: its presence means complete
    if ram.exists():
        os.utime(path)  # "last used", for _forget_old (noatime mounts)
        return path
    tdir.mkdir(parents=True, exist_ok=True)
    lock = await asyncio.to_thread(_lock_file, tdir / f"{key}.lock")
    try:
        if ram.exists():
            return path
        _forget_old(tdir)
        work = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=tdir))
        try:
            placeholder = work / "upper.img"
            with open(placeholder, "wb") as f:
                f.truncate(upper_size)
            tvm = replace(
                vm,
                console=str(work / CONSOLE_LOG_NAME),
                upper_disk=str(placeholder),
                upper_format="raw",
                upper_backing=[],
                layers=0,
                template=True,
                ram_file=str(work / "guest.ram"),
                network=False,
                ports=[],
            )
            _, status = await run_shim(
                tvm,
                work,
                work / AGENT_SOCKET_NAME,
                None,
                remaining(deadline),
                {"mode": "template", "snapshot": str(path)},
            )
            if status is None or status.word != STATUS_TEMPLATE:
                log.warning(
                    "VM engine: could not create a snapshot template: %s\n%s",
                    f"{status.word} {status.arg}" if status else "timeout",
                    console_tail(work / CONSOLE_LOG_NAME, 10),
                )
                return None
            (work / "guest.ram").rename(ram)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    finally:
        lock.close()
    return path if ram.exists() else None


def forget(snap: Path) -> None:
    """Delete a template (boxes mapping its RAM keep their copy: the inode lives on)."""
    for suffix in (".ram", ".snap", ".lock"):
        snap.with_suffix(suffix).unlink(missing_ok=True)


def _forget_old(tdir: Path) -> None:
    """Delete snapshot templates not used for two weeks (older artifacts, other shapes)."""
    now = time.time()
    for snap in tdir.glob("*.snap"):
        try:
            st = snap.stat()
            if now - max(st.st_atime, st.st_mtime) > TEMPLATE_MAX_AGE:
                forget(snap)
        except OSError:
            pass


def _qemu_identity() -> str:
    """Changes whenever the QEMU binary does (snapshots are only restored by the same QEMU)."""
    st = Path(qemu_binary()).stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


@functools.cache
def host_cpu_identity() -> str:
    """The host CPU as a template depends on it: model, feature flags, and the TSC frequency to
    10 MHz (what a TCG guest's ``tsc_early_khz`` is taken from; finer would rebuild templates
    on hosts whose reported frequency wanders)."""
    model = flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() == "model name" and not model:
                    model = value.strip()
                elif name.strip() == "flags" and not flags:
                    flags = hashlib.sha256(" ".join(sorted(value.split())).encode()).hexdigest()[:16]
                if model and flags:
                    break
    except OSError:
        pass
    khz = host_tsc_khz()
    return f"{model}|{flags}|{round(khz / 10_000) if khz else 0}"


def _lock_file(path: Path) -> IO[str]:
    f = open(path, "a")  # noqa: SIM115 - returned to the caller, which closes it
    fcntl.flock(f, fcntl.LOCK_EX)
    return f
