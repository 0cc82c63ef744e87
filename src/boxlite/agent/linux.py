"""Thin ctypes wrappers for the Linux calls the standard library lacks (stdlib only)."""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)

# clone/unshare flags
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount flags
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

# capabilities
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2
# Docker's default set for a box's root (CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID,
# SETUID, SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP); the host
# resolves a box's own set (runtime/capabilities.py) and sends it as a mask like this one.
DEFAULT_BOX_CAPS = 0xA80425FB

# prctl options
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2

_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
_SYS_CAPSET = {"x86_64": 126, "aarch64": 91}
MACHINE = os.uname().machine  # platform.machine(), without importing platform


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _b(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    _check(
        _libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)),
        f"mount {fstype or source} on {target}",
    )


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), f"umount {target}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    """Join the namespace ``fd`` refers to (this thread only, for a network namespace)."""
    _check(_libc.setns(fd, nstype), "setns")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(_SYS_PIVOT_ROOT[MACHINE], _b(new_root), _b(put_old)), "pivot_root")


def syscall(number: int, *args: int) -> int:
    """A raw system call with integer/pointer arguments."""
    return _check(_libc.syscall(ctypes.c_long(number), *(ctypes.c_ulong(a) for a in args)), f"syscall {number}")


# new mount API (same numbers on x86_64 and aarch64)
_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_MOUNT_SETATTR = 428, 429, 442
OPEN_TREE_CLONE = 1
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_IDMAP = 0x00100000


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def bind_idmapped(source: str, target_fd: int, userns_fd: int | None, readonly: bool) -> None:
    """Bind ``source`` on the file or dir open as ``target_fd`` (O_PATH), read-only if asked,
    with ownership mapped through ``userns_fd``'s uid/gid maps when given. Always nosuid and
    nodev: host setuid files and device nodes grant nothing through it."""
    flags = OPEN_TREE_CLONE | os.O_CLOEXEC | AT_RECURSIVE
    fd = _check(_libc.syscall(ctypes.c_long(_SYS_OPEN_TREE), -100, _b(source), flags), f"open_tree {source}")
    try:
        attr = _MountAttr(
            MOUNT_ATTR_NOSUID
            | MOUNT_ATTR_NODEV
            | (MOUNT_ATTR_IDMAP if userns_fd is not None else 0)
            | (MOUNT_ATTR_RDONLY if readonly else 0),
            0,
            0,
            userns_fd or 0,
        )
        size = ctypes.c_size_t(ctypes.sizeof(attr))
        setattr_flags = AT_EMPTY_PATH | AT_RECURSIVE
        _check(
            _libc.syscall(ctypes.c_long(_SYS_MOUNT_SETATTR), fd, b"", setattr_flags, ctypes.byref(attr), size),
            f"mount_setattr {source}",
        )
        move_flags = MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH
        _check(_libc.syscall(ctypes.c_long(_SYS_MOVE_MOUNT), fd, b"", target_fd, b"", move_flags), "move_mount")
    finally:
        os.close(fd)


def mapping_userns(inside: int, outside: int, count: int) -> int:
    """An fd of a new user namespace whose uid and gid maps are ``inside outside count``, for
    id-mapped mounts (the namespace engine's layers and volumes: ``0 uid_base 65536``). Needs
    root: a short-lived child process holds the namespace while the maps are written."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(done_w)
            os.close(ready_r)
            unshare(CLONE_NEWUSER)
            os.write(ready_w, b"1")
            os.read(done_r, 1)
        finally:
            os._exit(0)
    try:
        if os.read(ready_r, 1) != b"1":
            raise OSError("could not create the id-mapping user namespace")
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(f"{inside} {outside} {count}\n")
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(done_w)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:  # SIGCHLD ignored (the zygote): reaped already
            pass
        for fd in (ready_r, ready_w, done_r):
            os.close(fd)


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(
        _libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)),
        f"prctl({option})",
    )


def prctl_ptr(option: int, arg2: int, pointer: int) -> int:
    return _check(
        _libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_void_p(pointer), ctypes.c_ulong(0), ctypes.c_ulong(0)),
        f"prctl({option})",
    )


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


def drop_capabilities(cap_last: int, keep: int = 0) -> None:
    """Empty the bounding and ambient sets, then the effective/permitted/inheritable sets;
    ``keep`` (a bit mask) stays bounding, permitted and effective. ``cap_last`` -1: leave the
    bounding set alone."""
    set_capabilities(cap_last, keep, keep)


def limit_bounding(cap_last: int, keep: int) -> None:
    """Drop every capability up to ``cap_last`` but those in ``keep`` from the bounding set."""
    for cap in range(cap_last + 1):
        if keep >> cap & 1:
            continue
        try:
            prctl(PR_CAPBSET_DROP, cap)
        except OSError:
            pass


def set_capabilities(cap_last: int, bounding: int, permitted: int) -> None:
    """Bounding set reduced to ``bounding`` (bit masks; needs CAP_SETPCAP, so first), ambient
    and inheritable sets empty, permitted and effective exactly ``permitted``."""
    limit_bounding(cap_last, bounding)
    try:
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass
    header = _CapHeader(0x20080522, 0)
    data = (_CapData * 2)()
    data[0].effective = data[0].permitted = permitted & 0xFFFFFFFF
    data[1].effective = data[1].permitted = permitted >> 32 & 0xFFFFFFFF
    _check(_libc.syscall(_SYS_CAPSET[MACHINE], ctypes.byref(header), ctypes.byref(data)), "capset")


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)


SIOCGIFFLAGS, SIOCSIFFLAGS, SIOCSIFADDR, SIOCSIFNETMASK, SIOCADDRT = 0x8913, 0x8914, 0x8916, 0x891C, 0x890B
IFF_UP, RTF_UP, RTF_GATEWAY = 0x1, 0x1, 0x2


def set_interface_up(name: str = "lo") -> None:
    """Bring an interface up in the current network namespace (SIOCGIFFLAGS/SIOCSIFFLAGS)."""
    import fcntl
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", name.encode(), 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", name.encode(), flags | IFF_UP))


def set_loopback_up() -> None:
    set_interface_up("lo")


def _sockaddr_in(address: str) -> bytes:
    import socket
    import struct

    return struct.pack("=H2x4s8x", socket.AF_INET, socket.inet_aton(address))


def configure_ipv4(name: str, address: str, netmask: str, gateway: str) -> None:
    """Static IPv4 address and default route for ``name`` (the ioctls ``ip`` would issue)."""
    import fcntl
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifname = name.encode().ljust(16, b"\0")
        fcntl.ioctl(s.fileno(), SIOCSIFADDR, ifname + _sockaddr_in(address))
        fcntl.ioctl(s.fileno(), SIOCSIFNETMASK, ifname + _sockaddr_in(netmask))
        set_interface_up(name)
        any_ = _sockaddr_in("0.0.0.0")
        # struct rtentry: pad, dst, gateway, genmask, flags, pad, pad, pad, metric, dev, mtu, window, irtt
        route = struct.pack(
            "@L16s16s16sHhLPhPLLH0L", 0, any_, _sockaddr_in(gateway), any_, RTF_UP | RTF_GATEWAY, 0, 0, 0, 0, 0, 0, 0, 0
        )
        fcntl.ioctl(s.fileno(), SIOCADDRT, route)


DEV_LINKS = (
    ("ptmx", "pts/ptmx"),
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
)


def make_dev_links(dev: str) -> None:
    """The standard symlinks of a box's /dev (both engines lay out /dev the same way)."""
    for name, target in DEV_LINKS:
        os.symlink(target, f"{dev}/{name}")
