"""Per-process resource limits of box processes (BoxLite's ``SecurityOptions`` rlimits; stdlib only).

The host sends them with every exec request as ``"rlimits": {"nofile": n, "fsize": bytes,
"cpu": seconds}``; the child sets soft and hard limit to the value right before ``execve``. Box
root cannot raise a hard limit again: that takes CAP_SYS_RESOURCE, which the namespace engine's
box root lacks in the host's user namespace and which is not in a box's default capabilities.
"""

from __future__ import annotations

import resource

LIMITS = {
    "nofile": (resource.RLIMIT_NOFILE, 1 << 20),  # open files; the kernel's default nr_open
    "fsize": (resource.RLIMIT_FSIZE, 1 << 62),  # bytes one file may grow to (EFBIG, SIGXFSZ)
    "cpu": (resource.RLIMIT_CPU, 1 << 32),  # CPU seconds of the process (SIGXCPU, then SIGKILL)
}


def parse(value: object) -> dict[str, int]:
    """Validated limits from a request (ValueError for anything unknown or out of range)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("rlimits must be an object")
    out: dict[str, int] = {}
    for name, limit in value.items():
        if name not in LIMITS:
            raise ValueError(f"unknown rlimit {name!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= LIMITS[name][1]:
            raise ValueError(f"rlimit {name} must be an integer in 1..{LIMITS[name][1]}, got {limit!r}")
        out[name] = limit
    return out


def apply(limits: dict[str, int]) -> None:
    """In the child, before ``execve``: soft = hard = the value (lowering needs no privilege)."""
    for name, limit in limits.items():
        kind = LIMITS[name][0]
        _, hard = resource.getrlimit(kind)
        value = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
        resource.setrlimit(kind, (value, value))
