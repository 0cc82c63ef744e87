"""Settings of the box's own network namespace (stdlib only)."""

from __future__ import annotations

import sys

UNPRIVILEGED_PORT_START = "/proc/sys/net/ipv4/ip_unprivileged_port_start"
PING_GROUP_RANGE = "/proc/sys/net/ipv4/ping_group_range"


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
    # ICMP echo sockets for every box user (Docker's default too): on the namespace engine the
    # namespace is not the box's, so its CAP_NET_RAW cannot open raw sockets there; ping can.
    try:
        with open(PING_GROUP_RANGE, "w") as f:
            f.write("0 2147483647")
    except OSError as e:
        print(f"boxlite: cannot allow ping in the box: {e}", file=sys.stderr)
