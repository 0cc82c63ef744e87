"""Seccomp deny-list for box processes, assembled as classic BPF (no libseccomp needed).

Denied calls fail with EPERM; ``clone3`` fails with ENOSYS so libc falls back to ``clone``,
whose flags *can* be inspected: creating namespaces is denied. ``openat2`` (its mode sits in a
struct a filter cannot read) fails with ENOSYS too: libc and runtimes fall back to ``openat``.
io_uring fails with ENOSYS (as in Docker's profile): its operations bypass this filter, and its
kernel code has been a frequent source of privilege escalations. A foreign architecture (e.g.
the x32 or i386 ABI on x86_64) kills the process.

No setuid/setgid bit can be set (``chmod`` family) or created (``open``/``creat``/``mknod``
family) by a box process: EPERM. Inside the box such bits grant nothing (no_new_privs, nosuid
mounts), but files in volumes are host files, owned by host users (box root writes as the
volume's owner), and a setuid-root file planted there would be a root shell for any local host
user who can reach it. Packages that ship setuid programs therefore fail to install in a box.
"""

from __future__ import annotations

import ctypes
import errno
import struct

from . import linux

# Denied system calls: name -> (x86_64 nr, aarch64 nr). None = absent on that arch.
DENIED: dict[str, tuple[int | None, int | None]] = {
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "chroot": (161, 51),
    "swapon": (167, 224),
    "swapoff": (168, 225),
    "reboot": (169, 142),
    "sethostname": (170, 161),
    "setdomainname": (171, 162),
    "iopl": (172, None),
    "ioperm": (173, None),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "ptrace": (101, 117),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "kcmp": (312, 272),
    "pidfd_getfd": (438, 438),
    "keyctl": (250, 219),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "userfaultfd": (323, 282),
    "unshare": (272, 97),
    "setns": (308, 268),
    "open_by_handle_at": (304, 265),
    "name_to_handle_at": (303, 264),
    "acct": (163, 89),
    "quotactl": (179, 60),
    "syslog": (103, 116),
    "settimeofday": (164, 170),
    "clock_settime": (227, 112),
    "clock_adjtime": (305, 266),
    "adjtimex": (159, 171),
    "lookup_dcookie": (212, 18),
    "vhangup": (153, 58),
    "uselib": (134, None),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "mount_setattr": (442, 442),
    "fanotify_init": (300, 262),
}
# Calls that fail with ENOSYS ("not implemented here"), so that callers fall back cleanly.
UNAVAILABLE: dict[str, tuple[int | None, int | None]] = {
    "clone3": (435, 435),
    "openat2": (437, 437),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
}
# Calls whose mode argument may not carry S_ISUID/S_ISGID: name -> (x86_64 nr, aarch64 nr, index
# of the mode argument).
MODE_CHECKED: dict[str, tuple[int | None, int | None, int]] = {
    "chmod": (90, None, 1),
    "fchmod": (91, 52, 1),
    "fchmodat": (268, 53, 2),
    "fchmodat2": (452, 452, 2),
    "open": (2, None, 2),
    "openat": (257, 56, 3),
    "creat": (85, None, 1),
    "mknod": (133, None, 1),
    "mknodat": (259, 33, 2),
}
SETID_BITS = 0o6000  # S_ISUID | S_ISGID
# Calls refused for one value of one argument: name -> (x86_64 nr, aarch64 nr, argument index,
# value). Both would offer box memory to KSM; on a host that runs it, a box could then learn by
# copy-on-write timing whether any other mergeable memory on the host (another tenant's VM, for
# one) holds a page it guessed (docs/security.md).
VALUE_DENIED: dict[str, tuple[int | None, int | None, int, int]] = {
    "madvise(MADV_MERGEABLE)": (28, 233, 2, 12),
    "prctl(PR_SET_MEMORY_MERGE)": (157, 167, 0, 67),
}
CLONE = (56, 220)
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
NAMESPACE_FLAGS = (
    linux.CLONE_NEWNS
    | linux.CLONE_NEWCGROUP
    | linux.CLONE_NEWUTS
    | linux.CLONE_NEWIPC
    | linux.CLONE_NEWUSER
    | linux.CLONE_NEWPID
    | linux.CLONE_NEWNET
)

_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
_RET_ALLOW = 0x7FFF0000
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_INSN = struct.Struct("=HBBI")


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return _INSN.pack(code, jt, jf, k)


def build_filter(machine: str = linux.MACHINE) -> bytes:
    """The BPF program (sock_filter array) for ``machine``."""
    index = 0 if machine == "x86_64" else 1
    eperm = _RET_ERRNO | errno.EPERM
    prog = [
        _insn(_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        _insn(_JEQ_K, 1, 0, AUDIT_ARCH[machine]),
        _insn(_RET_K, 0, 0, _RET_KILL_PROCESS),
        _insn(_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
    ]
    if machine == "x86_64":  # x32 ABI numbers
        prog += [_insn(_JGE_K, 0, 1, 0x40000000), _insn(_RET_K, 0, 0, eperm)]
    for numbers in DENIED.values():
        nr = numbers[index]
        if nr is not None:
            prog += [_insn(_JEQ_K, 0, 1, nr), _insn(_RET_K, 0, 0, eperm)]
    for numbers in UNAVAILABLE.values():
        nr = numbers[index]
        if nr is not None:
            prog += [_insn(_JEQ_K, 0, 1, nr), _insn(_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS)]
    for x86_64, aarch64, arg in MODE_CHECKED.values():
        nr = x86_64 if index == 0 else aarch64
        if nr is not None:
            prog += _deny_if_arg(nr, arg, _JSET_K, SETID_BITS)  # the mode carries a set-id bit
    for x86_64, aarch64, arg, value in VALUE_DENIED.values():
        nr = x86_64 if index == 0 else aarch64
        if nr is not None:
            prog += _deny_if_arg(nr, arg, _JEQ_K, value)
    prog += _deny_if_arg(CLONE[index], 0, _JSET_K, NAMESPACE_FLAGS)  # clone flags asking for namespaces
    prog.append(_insn(_RET_K, 0, 0, _RET_ALLOW))  # every other syscall
    return b"".join(prog)


def _deny_if_arg(nr: int, arg: int, test: int, k: int) -> list[bytes]:
    """EPERM for syscall ``nr`` when ``test`` (JEQ: equals, JSET: shares a bit) holds between
    the low 32 bits of ``args[arg]`` (little endian; every checked argument is an int or flags)
    and ``k``; any other call of ``nr`` is allowed. Another syscall falls through."""
    return [
        _insn(_JEQ_K, 0, 4, nr),
        _insn(_LD_W_ABS, 0, 0, 16 + 8 * arg),
        _insn(test, 0, 1, k),
        _insn(_RET_K, 0, 0, _RET_ERRNO | errno.EPERM),
        _insn(_RET_K, 0, 0, _RET_ALLOW),
    ]


class _Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_SYS_SECCOMP = {"x86_64": 317, "aarch64": 277}
_SET_MODE_FILTER = 1
_FLAG_SPEC_ALLOW = 4  # do not force speculative-store-bypass mitigation (costs ms per exec here)


def install(program: bytes) -> None:
    """Load ``program`` for the calling thread (needs no_new_privs or CAP_SYS_ADMIN)."""
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = _Fprog(len(program) // _INSN.size, ctypes.cast(buf, ctypes.c_void_p))
    try:
        linux.syscall(_SYS_SECCOMP[linux.MACHINE], _SET_MODE_FILTER, _FLAG_SPEC_ALLOW, ctypes.addressof(fprog))
    except OSError:  # kernels before 4.17 lack the flag
        linux.prctl_ptr(linux.PR_SET_SECCOMP, linux.SECCOMP_MODE_FILTER, ctypes.addressof(fprog))
