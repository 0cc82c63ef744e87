"""The QEMU command line of a box VM (``-M microvm``, direct kernel boot, virtio-mmio)."""

from __future__ import annotations

import math
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ...errors import EngineError

QEMU = "qemu-system-x86_64"
AGENT_PORT = "boxlite.agent"  # virtio-serial port name; vminit looks it up in sysfs
DEFAULT_MEMORY_MIB = 512
DEFAULT_CPUS = 2
DEFAULT_TB_SIZE_MIB = 48  # TCG translation cache: 16-24 MiB thrash (exec 0.5 s), 64+ only costs memory
# slirp's fixed layout: the box is GUEST_IP, DNS at DNS. slirp maps GATEWAY (and every other address of
# the 10.0.2.0/24 net but DNS) to the host's loopback: the host guard (..net.hostguard) refuses that.
GUEST_NET = {"address": "10.0.2.15", "netmask": "255.255.255.0", "gateway": "10.0.2.2", "dns": "10.0.2.3"}
_HOSTNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$")


INCOMING_STREAM = "<stream>"
"""``VmConfig.incoming`` of a fork's copy: the state comes through a pipe the shim was handed
(``incoming_fd`` in its config), not from a file."""


@dataclass
class VmConfig:
    """What one VM boots with. JSON-serializable (the shim receives it in a file)."""

    kernel: str
    initramfs: str
    console: str
    upper_disk: str | None = None
    upper_format: str = "raw"  # "qcow2" once the box has snapshots (its frozen layers are the backing chain)
    upper_backing: list[str] = field(default_factory=list)  # backing files of a qcow2 upper disk (read-only)
    upper_volatile: bool = False  # deleted when the box stops: QEMU ignores the guest's flushes of it
    lower_disk: str | None = None
    layers: int = 0
    hostname: str = "box"
    cpus: int = DEFAULT_CPUS
    memory_mib: int = DEFAULT_MEMORY_MIB
    accel: str = "tcg"
    tb_size_mib: int = DEFAULT_TB_SIZE_MIB
    debug: bool = False
    extra_cmdline: str = ""
    network: bool = False  # outbound network (else the NIC's backend is restricted to nothing)
    ports: list[list[Any]] = field(default_factory=list)  # [host ip, host port, box port, proto]
    volumes: list[list[Any]] = field(default_factory=list)  # [host dir, box path, read-only, file name]
    template: bool = False  # boot to "agent loaded, waiting for settings" for a snapshot
    incoming: str | None = None  # restore the device state saved in this file (or INCOMING_STREAM)
    ram_file: str | None = None  # guest RAM: a template's file (written when template, else mapped private)
    ram_anonymous: bool = False  # guest RAM a plain "ram" backend: a template box resumed from its saved memory
    net_gid: int | None = None  # an allow-listed box's own helper group (..net.allowlist), else the guard's
    dnsproxy: list[str] | None = None  # argv of its DNS proxy, started by the shim before QEMU
    secretproxy: list[str] | None = None  # argv of its secret proxy (in group net_gid), started likewise

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def qemu_binary() -> str:
    path = shutil.which(QEMU)
    if path is None:
        raise EngineError(f"{QEMU} not found: install the Debian package qemu-system-x86")
    return path


def vcpus(cpus: float | None) -> int:
    """Whole vCPUs for a fractional ``cpus`` limit, at most the host's CPU count."""
    host = os.cpu_count() or 1
    if cpus is None:
        return min(DEFAULT_CPUS, host)
    return max(1, min(host, math.ceil(cpus)))


def host_tsc_khz() -> int | None:
    """The host TSC frequency (kHz): TCG guests hang at boot without ``tsc_early_khz``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return round(float(line.split(":")[1]) * 1000)
    except (OSError, ValueError):
        pass
    return None


def kernel_cmdline(cfg: VmConfig) -> str:
    """Kernel parameters. Never carries user data such as environment variables."""
    args = ["console=ttyS0", "reboot=t", "panic=-1", "8250.nr_uarts=1", "cryptomgr.notests"]
    if not cfg.debug:
        args.append("quiet")
    if cfg.accel == "tcg":
        khz = host_tsc_khz()
        if khz:
            # TCG: unsynchronized TSCs would drop the clocksource to jiffies (10 ms resolution).
            args += [f"tsc_early_khz={khz}", "tsc=reliable", f"lpj={khz * 10}"]
    if cfg.template or cfg.incoming:
        args.append("boxlite.template=1")
    if cfg.extra_cmdline:
        args.append(cfg.extra_cmdline)
    return " ".join(args)


def safe_hostname(name: str) -> str:
    return name if _HOSTNAME.match(name) else "box"


def _opt(value: str) -> str:
    """Escape a value for QEMU's comma-separated option syntax."""
    return value.replace(",", ",,")


# QEMU's own seccomp filter: no obsolete system calls, no set*id, no scheduler/affinity
# changes. ``spawn`` stays allowed: saving a template runs ``exec:cat``.
SANDBOX = "on,obsolete=deny,elevateprivileges=deny,resourcecontrol=deny"
# QEMU keeps uid 0 (its disks, RAM files and sockets are root's, and -runas would undo its
# PR_SET_PDEATHSIG tie to the shim) but starts with no capability at all, none to regain
# (empty bounding set, no_new_privs): it cannot override file permissions, load modules,
# mount, trace or signal other users' processes. util-linux's setpriv does it and execs QEMU.
DROP_PRIVILEGES = ("--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all", "--no-new-privs", "--")


def unprivileged(argv: list[str]) -> list[str]:
    """``argv`` run with every capability dropped (same pid: setpriv execs it)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise EngineError("setpriv not found: install the Debian package util-linux")
    return [setpriv, *DROP_PRIVILEGES, *argv]


def qemu_argv(cfg: VmConfig, agent_fd: int | None, qmp_fd: int | None, console_fd: int | None = None) -> list[str]:
    """Full argv. ``agent_fd``/``qmp_fd`` are connected sockets inherited by QEMU;
    ``console_fd`` the write end of the pipe the shim drains into a size-capped console log
    (:mod:`.console`), else QEMU writes ``cfg.console`` itself (the short KVM probe boot)."""
    if cfg.accel == "kvm":
        accel = ["-accel", "kvm", "-cpu", "host"]
    else:
        accel = ["-accel", f"tcg,thread=multi,tb-size={cfg.tb_size_mib}", "-cpu", "max"]
    # With an RTC: without one the kernel waits 1 s for it at boot. Its driver loses IRQ 8 to
    # the fifth virtio-mmio device ("genirq: Flags mismatch" on the console), which is harmless:
    # reading the clock needs no IRQ, and the host sets the clock anyway.
    # mem-merge=off: QEMU would mark guest RAM mergeable, and on a host that runs KSM pages equal
    # across boxes would then be merged, which lets a box learn by write timing what another
    # box's memory holds (docs/security.md). Every memory backend below says merge=off too.
    machine = "microvm,acpi=off,rtc=on,mem-merge=off"
    if cfg.ram_file or cfg.volumes or cfg.ram_anonymous:
        machine += ",memory-backend=ram"
    argv = [
        qemu_binary(),
        "-M",
        machine,
        "-global",
        "virtio-mmio.force-legacy=false",
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        *accel,
        "-smp",
        str(cfg.cpus),
        "-m",
        str(cfg.memory_mib),
        "-sandbox",
        SANDBOX,
    ]
    console = f"/proc/self/fd/{console_fd}" if console_fd is not None else cfg.console  # reopens the pipe
    argv += ["-chardev", f"file,id=con,path={_opt(console)}", "-serial", "chardev:con"]
    if cfg.ram_file:
        argv += ram_backend(cfg)
    elif cfg.ram_anonymous:  # same RAM block name as a template box's: its saved memory loads into it
        argv += ["-object", f"memory-backend-ram,id=ram,size={cfg.memory_mib}M,merge=off"]
    elif cfg.volumes:  # virtiofsd reads and writes guest memory: it must be shared with it
        argv += ["-object", f"memory-backend-memfd,id=ram,size={cfg.memory_mib}M,share=on,merge=off"]
    for i, _ in enumerate(cfg.volumes):
        argv += [
            "-chardev",
            f"socket,id=vfs{i},path={virtiofs_socket(i)}",
            "-device",
            f"vhost-user-fs-device,chardev=vfs{i},tag={virtiofs_tag(i)}",
        ]
    if not cfg.incoming:  # a restore gets its kernel with the RAM; loading it again only costs
        argv += ["-kernel", cfg.kernel, "-initrd", cfg.initramfs, "-append", kernel_cmdline(cfg)]
    if cfg.lower_disk:
        argv += [
            "-drive",
            f"if=none,id=lower,file={_opt(cfg.lower_disk)},format=raw,readonly=on",
            "-device",
            "virtio-blk-device,drive=lower,serial=boxlite-lower",
        ]
    if cfg.upper_disk:
        argv += [
            "-drive",
            f"if=none,id=upper,file={_opt(cfg.upper_disk)},format={cfg.upper_format},discard=unmap"
            + (",cache.no-flush=on" if cfg.upper_volatile else ""),
            "-device",
            "virtio-blk-device,drive=upper,serial=boxlite-upper",
        ]
    argv += ["-netdev", netdev(cfg), "-device", "virtio-net-device,netdev=net0"]
    # Free page reporting hands memory the guest frees back to the host. No balloon at all with
    # template RAM (nor in a box resumed from such memory: the device as it was saved): QEMU 7.2
    # discards a file-backed block by punching holes in the file even when it is mapped private,
    # and a guest may inflate its balloon whenever it likes, so a hostile guest kernel could zero
    # pages of the template file under every other box restored from it.
    if not (cfg.ram_file or cfg.ram_anonymous):
        argv += ["-device", "virtio-balloon-device,free-page-reporting=on"]
    if agent_fd is not None:
        argv += [
            "-chardev",
            f"socket,id=agent,fd={agent_fd}",
            "-device",
            "virtio-serial-device,max_ports=2",
            "-device",
            f"virtserialport,chardev=agent,name={AGENT_PORT}",
        ]
    if qmp_fd is not None:
        argv += ["-chardev", f"socket,id=qmp,fd={qmp_fd}", "-mon", "chardev=qmp,mode=control"]
    if cfg.incoming:
        argv += ["-incoming", "defer"]  # the shim enables x-ignore-shared, then migrate-incoming
    return unprivileged(argv)


def virtiofs_socket(index: int) -> str:
    """vhost-user socket of volume ``index``, relative to the run dir (QEMU's and virtiofsd's
    working directory: a unix socket path has at most 107 bytes). Unique on the host: virtiofsd
    names its lock file ``/run/virtiofsd/<socket path>.pid``, so two boxes' ``vfs0.sock`` made
    the second virtiofsd refuse to start. The shim's pid (QEMU's and virtiofsd's parent, alive
    as long as they are) tells boxes apart."""
    return f"vfs{index}-{os.getpid()}.sock"


def virtiofs_tag(index: int) -> str:
    return f"boxlite-vol{index}"


def netdev(cfg: VmConfig) -> str:
    """User-mode networking (slirp) in QEMU itself: NAT through host sockets, ``hostfwd`` for
    published ports. Every VM has the same NIC, so that one snapshot fits all; a box without
    network gets ``restrict=on`` (nothing leaves) and never sees the NIC (the guest agent moves
    the box into a network namespace of its own).

    slirp connects from the host's network namespace and maps 10.0.2.2 to the host's loopback,
    so a box with network runs QEMU in the host guard's group (the shim sets it): the guard's
    nftables rule refuses QEMU's new flows to any of the host's own addresses, but DNS (port 53
    of the host's resolvers, which slirp forwards 10.0.2.3 to). passt (``-netdev stream``, with
    ``--no-map-gw``) was the alternative; Debian 12's passt never completes the handshake of a
    published-port connection until the host client sends data (server-first protocols hang),
    and slirp's published ports work."""
    opts = ["user", "id=net0", "net=10.0.2.0/24", "ipv6=off"]
    if not (cfg.network or cfg.ports):
        opts.append("restrict=on")
    for host_ip, host_port, box_port, proto in cfg.ports:
        opts.append(f"hostfwd={proto}:{host_ip}:{int(host_port)}-{GUEST_NET['address']}:{int(box_port)}")
    return _opt_join(opts)


def _opt_join(opts: list[str]) -> str:
    return ",".join(o.replace(",", ",,") for o in opts)


def ram_backend(cfg: VmConfig) -> list[str]:
    """Guest RAM in ``cfg.ram_file``. A template VM writes it (``share=on``); a restored box
    maps it copy-on-write (``share=off``): pages it only reads stay in the host page cache,
    shared by every box restored from the same template, and cost nothing until touched."""
    assert cfg.ram_file
    share = "off" if cfg.incoming else "on"
    path = _opt(cfg.ram_file)
    return ["-object", f"memory-backend-file,id=ram,size={cfg.memory_mib}M,mem-path={path},share={share},merge=off"]


def console_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a console log (for error messages)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.replace("\r", "").splitlines()[-lines:])
