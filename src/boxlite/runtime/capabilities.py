"""Box root's Linux capabilities: names, BoxLite's add/drop policy, and what we refuse.

Box root starts from Docker's 14-capability baseline. ``ContainerCapabilities(add, drop)``
changes it the way BoxLite (and Moby) resolve it: names are case-insensitive, ``CAP_`` is
optional, ``drop=["ALL"]`` starts from nothing, otherwise drops apply to the baseline before
adds. The agent turns the resolved set into root's bounding, permitted and effective sets
(non-root users get none; inheritable and ambient stay empty).

What ``add`` may grant is limited to the baseline: every other capability either breaks the
box boundary (SYS_ADMIN, SYS_MODULE, SYS_RAWIO, SYS_PTRACE, BPF, PERFMON, MAC_*,
DAC_READ_SEARCH: ``open_by_handle_at`` walks out of any root) or governs something the
seccomp filter denies anyway or the box does not own (its network namespace belongs to the
engine on the namespace engine, so NET_ADMIN could not be honoured), so it is refused with
UnsupportedOptionError rather than accepted and ignored. ``add=["ALL"]`` is refused likewise.

File capabilities and kept setuid bits are host privileges on the namespace engine: a
writable volume is id-mapped so that box root writes as the host owner (host root for a
root-owned directory), and a ``security.capability`` xattr written there carries host root as
its owner. SETFCAP and FSETID are therefore left out of the default set of a namespace box
with a writable volume, and asking for either explicitly with one is a ConfigError.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import ConfigError, UnsupportedOptionError

# Linux UAPI numbers (include/uapi/linux/capability.h): the Nth name is capability N.
_NAMES = """
CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE
NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT
SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE
AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ
PERFMON BPF CHECKPOINT_RESTORE
"""
NUMBERS: dict[str, int] = {name: number for number, name in enumerate(_NAMES.split())}
DEFAULT: frozenset[str] = frozenset(
    {
        "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
        "SETPCAP", "NET_BIND_SERVICE", "NET_RAW", "SYS_CHROOT", "MKNOD", "AUDIT_WRITE", "SETFCAP",
    }
)  # fmt: skip
"""Docker's (and BoxLite's) default set for a container's root."""
HOST_PRIVILEGE_ON_VOLUMES: frozenset[str] = frozenset({"SETFCAP", "FSETID"})
"""Capabilities whose effect lands on host files of a writable namespace-engine volume."""
MAX_NAMES = 64  # per list: more than every capability there is
ALL = "ALL"


def canonical(name: Any, what: str) -> str:
    """``"cap_net_raw"`` -> ``"NET_RAW"``; ``"all"`` -> ``"ALL"``. ConfigError for anything else."""
    if not isinstance(name, str) or not name.isascii():
        raise ConfigError(f"{what}: capability names are ASCII strings, got {name!r}")
    upper = name.strip().upper()
    if upper == ALL:
        return ALL
    bare = upper.removeprefix("CAP_")
    if bare not in NUMBERS:
        raise ConfigError(f"{what}: unknown Linux capability {name!r}")
    return bare


def parse_names(names: Any, what: str) -> tuple[str, ...]:
    """A list of capability names as sorted canonical names (deduplicated)."""
    if names is None:
        return ()
    if isinstance(names, str) or not isinstance(names, Iterable):
        raise ConfigError(f"{what} must be a list of capability names, got {names!r}")
    items = list(names)
    if len(items) > MAX_NAMES:
        raise ConfigError(f"{what}: at most {MAX_NAMES} names")
    return tuple(sorted({canonical(n, what) for n in items}))


def check_addable(add: Sequence[str]) -> None:
    """Refuse additions beyond the baseline (see the module docstring)."""
    for name in add:
        if name == ALL:
            raise UnsupportedOptionError(
                "advanced.capabilities.add", "ALL would grant capabilities that break the box boundary"
            )
        if name not in DEFAULT:
            raise UnsupportedOptionError(
                "advanced.capabilities.add",
                f"{name} is not granted to box root: only Docker's default capabilities can be added back",
            )


def resolve(add: Sequence[str], drop: Sequence[str]) -> frozenset[str]:
    """The set box root gets (canonical names): Moby's resolution, without ``add=["ALL"]``."""
    if ALL in drop:
        return frozenset(add)
    return (DEFAULT - set(drop)) | set(add)


def has_writable_volume(volumes: Iterable[Any]) -> bool:
    return any(not v.read_only for v in volumes)


def check_engine(add: Sequence[str], engine: str, volumes: Iterable[Any]) -> None:
    """ConfigError for an explicit SETFCAP/FSETID on a namespace box with a writable volume."""
    if engine == "namespace" and has_writable_volume(volumes):
        asked = sorted(HOST_PRIVILEGE_ON_VOLUMES & set(add))
        if asked:
            raise ConfigError(
                f"capabilities {', '.join(asked)} cannot be added to a namespace box with a writable volume:"
                " file capabilities and kept setuid bits written there would be valid on the host"
            )


def box_set(add: Sequence[str], drop: Sequence[str], engine: str, volumes: Iterable[Any]) -> frozenset[str]:
    """The resolved set for one box on ``engine`` (namespace + writable volume: no SETFCAP/FSETID)."""
    caps = resolve(add, drop)
    if engine == "namespace" and has_writable_volume(volumes):
        caps -= HOST_PRIVILEGE_ON_VOLUMES
    return caps


def mask(names: Iterable[str]) -> int:
    """Bit mask of capability names (bit N = capability number N)."""
    out = 0
    for name in names:
        out |= 1 << NUMBERS[name]
    return out


def from_options(caps: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(add, drop) from a ``ContainerCapabilities``-like object (or a dict from a REST body)."""
    if caps is None:
        return (), ()
    get = caps.get if isinstance(caps, dict) else lambda key, default=None: getattr(caps, key, default)
    add = parse_names(get("add", None), "advanced.capabilities.add")
    drop = parse_names(get("drop", None), "advanced.capabilities.drop")
    check_addable(add)
    return add, drop


__all__ = [
    "DEFAULT",
    "NUMBERS",
    "box_set",
    "canonical",
    "check_addable",
    "check_engine",
    "from_options",
    "mask",
    "parse_names",
    "resolve",
]
