"""Settings of the box's own network namespace (stdlib only)."""

from __future__ import annotations

import sys

UNPRIVILEGED_PORT_START = "/proc/sys/net/ipv4/ip_unprivileged_port_start"


def allow_low_ports() -> None:
    """Let every box process bind ports below 1024 in the box's network namespace, as docker
    does: box root holds no capability there (the namespace belongs to the engine, not to the
    box's user namespace, and VM box processes run without capabilities). The sysctl is per
    network namespace: the host's (or the guest's, when the box has a namespace of its own)
    is untouched. Call it from a process that is privileged over that namespace."""
    try:
        with open(UNPRIVILEGED_PORT_START, "w") as f:
            f.write("0")
    except OSError as e:  # an old kernel: the box still works, only low ports need root there
        print(f"boxlite: cannot allow low ports in the box: {e}", file=sys.stderr)
