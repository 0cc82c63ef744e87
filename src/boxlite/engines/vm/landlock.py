"""Landlock for QEMU: the files a box's QEMU may open, and nothing else.

QEMU runs as uid 0 (see ``qemu.unprivileged``: no capabilities) because its disks, RAM files
and sockets are root's. Without capabilities uid 0 still owns every root-owned file of the
host (/etc/passwd, cron, other boxes' disks): a guest that took over QEMU could write them.
This ruleset lets QEMU read the host's software (/usr, /lib*), /proc and /sys, a few /etc
files and devices, and read or write only the files of its own VM: kernel, initramfs, disks,
template RAM and state. Applied in QEMU's preexec (inherited across exec); a kernel without
Landlock (before 5.13, or disabled) leaves QEMU unrestricted.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Iterable

from .qemu import INCOMING_STREAM, VmConfig

_CREATE, _ADD_RULE, _RESTRICT = 444, 445, 446  # same numbers on x86_64 and aarch64
_CREATE_VERSION = 1
_RULE_PATH_BENEATH = 1
PR_SET_NO_NEW_PRIVS = 38

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15  # Landlock ABI 2, 3, 5
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV  # what a rule on a file may hold

READ = READ_FILE | READ_DIR
READ_EXEC = READ | EXECUTE
READ_WRITE = READ | WRITE_FILE | TRUNCATE
SOFTWARE = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin")
HOST_FILES = (
    "/etc/ld.so.cache", "/etc/localtime", "/etc/libnl", "/etc/resolv.conf",  # resolv.conf: QEMU's slirp DNS relay
    "/proc", "/sys", "/dev/urandom", "/dev/random",
)  # fmt: skip

_libc = ctypes.CDLL(None, use_errno=True)


def abi() -> int:
    """The kernel's Landlock ABI version; 0 when it has none."""
    version = _libc.syscall(ctypes.c_long(_CREATE), None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_VERSION))
    return max(int(version), 0)


def handled(version: int) -> int:
    rights = (1 << 13) - 1
    if version >= 2:
        rights |= REFER
    if version >= 3:
        rights |= TRUNCATE
    if version >= 5:
        rights |= IOCTL_DEV
    return rights


def ruleset(rules: Iterable[tuple[str, int]]) -> int | None:
    """A Landlock ruleset fd allowing each ``(path, rights)`` (missing paths are skipped), or
    None without Landlock."""
    version = abi()
    if not version:
        return None
    mask = handled(version)
    attr = struct.pack("=Q", mask)
    fd = _libc.syscall(ctypes.c_long(_CREATE), attr, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    if fd < 0:
        return None
    try:
        for path, rights in rules:
            try:
                target = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if not os.path.isdir(f"/proc/self/fd/{target}"):
                    rights &= FILE_RIGHTS
                rule = struct.pack("=Qi", rights & mask, target)
                if _libc.syscall(ctypes.c_long(_ADD_RULE), fd, _RULE_PATH_BENEATH, rule, 0) < 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"landlock_add_rule {path}: {os.strerror(err)}")
            finally:
                os.close(target)
    except BaseException:
        os.close(fd)
        raise
    return fd


def restrict_self(fd: int) -> None:
    """Enter the ruleset (in QEMU's preexec): for this process and what it executes."""
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if _libc.syscall(ctypes.c_long(_RESTRICT), fd, 0) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"landlock_restrict_self: {os.strerror(err)}")


def qemu_rules(cfg: VmConfig, run_dir: str, writable_dirs: Iterable[str] = ()) -> list[tuple[str, int]]:
    """What QEMU opens for ``cfg`` (measured with strace: cold boot, template save, restore,
    virtiofs volumes): host software and a few host files read-only, its own files."""
    rules = [(p, READ_EXEC) for p in SOFTWARE if os.path.isdir(p) and not os.path.islink(p)]
    rules += [(p, READ) for p in HOST_FILES]
    rules += [("/dev/null", READ_WRITE), ("/dev/kvm", READ_WRITE | IOCTL_DEV), (run_dir, READ_DIR)]
    incoming = cfg.incoming if cfg.incoming != INCOMING_STREAM else None  # a pipe: no file to open
    rules += [(p, READ_FILE) for p in (cfg.kernel, cfg.initramfs, cfg.lower_disk, incoming) if p]
    if cfg.upper_disk:
        rules.append((cfg.upper_disk, READ_WRITE))
    rules += [(p, READ_FILE) for p in cfg.upper_backing]  # a snapshotted box's frozen layers
    if cfg.ram_file and cfg.incoming:  # a restore maps the template's RAM (QEMU 7.2 opens it O_RDWR)
        rules.append((cfg.ram_file, READ_WRITE))
    elif cfg.ram_file:  # a template boot creates it
        writable_dirs = [*writable_dirs, os.path.dirname(cfg.ram_file)]
    rules += [(d, READ_WRITE | MAKE_REG) for d in writable_dirs]  # and its saved state, through `cat >`
    return rules
