"""What a box's network policy refused, for ``BoxMetrics`` (both engines): the packets its
nftables chain rejected (each refused TCP connect, UDP datagram or other flow's first packet;
``net_connections_refused``) and the names its DNS proxy answered NXDOMAIN (``net_dns_refused``).

Both come from the host (the kernel's rule counters, the proxy's own count), never from the box.
Boxes without an allow-list or secrets have no chain of their own: nothing is reported."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from . import allowlist, dnsproxy, hostguard

MAX_LISTING = 1 << 20
MAX_STATS = 4096


def _gid(box_dir: Path) -> int | None:
    try:
        gid = int(allowlist.gid_file(box_dir).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return gid if allowlist.GID_BASE <= gid < allowlist.GID_BASE + allowlist.GID_SLOTS else None


def rejected(listing: dict[str, Any]) -> int:
    """Packets counted by the rejecting rules of ``nft -j list chain`` output."""
    total = 0
    for item in listing.get("nftables", []):
        exprs = item.get("rule", {}).get("expr", []) if isinstance(item, dict) else []
        if not any(isinstance(e, dict) and "reject" in e for e in exprs):
            continue
        for e in exprs:
            counter = e.get("counter") if isinstance(e, dict) else None
            if isinstance(counter, dict) and isinstance(counter.get("packets"), int):
                total += counter["packets"]
    return total


def read(box_dir: Path) -> dict[str, float]:
    gid = _gid(box_dir)
    if gid is None:
        return {}
    out: dict[str, float] = {}
    try:
        proc = subprocess.run(
            [hostguard.nft_binary(), "-j", "list", "chain", "inet", allowlist.TABLE, allowlist.chain_name(gid)],
            capture_output=True,
            timeout=5,
            check=False,
        )
        if proc.returncode == 0 and len(proc.stdout) <= MAX_LISTING:
            out["net_connections_refused"] = float(rejected(json.loads(proc.stdout)))
    except (OSError, subprocess.TimeoutExpired, ValueError):
        pass
    try:
        fd = os.open(box_dir / dnsproxy.STATS_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            stats = json.loads(os.read(fd, MAX_STATS))
        finally:
            os.close(fd)
        if isinstance(stats, dict) and isinstance(stats.get("refused"), int):
            out["net_dns_refused"] = float(stats["refused"])
    except (OSError, ValueError):
        pass
    return out


__all__ = ["read", "rejected"]
