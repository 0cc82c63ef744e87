"""What a box's network policy refused, for ``BoxMetrics`` (both engines): the packets its
nftables chain rejected (each refused TCP connect, UDP datagram or other flow's first packet;
``net_connections_refused``) and the names its DNS proxy answered NXDOMAIN (``net_dns_refused``).

Both come from the host (the kernel's rule counters, the proxy's own count), never from the box.
The connection count includes what the host guard refused the box (link-local, the host itself,
private networks for a public-only box: ``hostguard.refused_counter``). Boxes without an
allow-list, secrets or ``public_only`` have neither chain nor counter: nothing is reported."""

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


def guard_refused(listing: dict[str, Any]) -> int:
    """Packets of the counter object in ``nft -j list counter`` output (the host guard's count)."""
    for item in listing.get("nftables", []):
        counter = item.get("counter") if isinstance(item, dict) else None
        if isinstance(counter, dict) and isinstance(counter.get("packets"), int):
            return int(counter["packets"])
    return 0


def _refused_packets(gid: int) -> int | None:
    """What the box's chain refused plus what the host guard refused its group (link-local, the
    host, and private networks for a public-only box); the chain's alone when the guard's
    counter is missing (a box started by an older version); None if nft cannot list the chain.
    Two nft runs: nft 1.0.6 fails a listing of two tables in one command."""
    chain = _listing("list", "chain", "inet", allowlist.TABLE, allowlist.chain_name(gid))
    if chain is None:
        return None
    guard = _listing("list", "counter", "inet", hostguard.TABLE, hostguard.refused_counter(gid))
    return rejected(chain) + (0 if guard is None else guard_refused(guard))


def _listing(*command: str) -> dict[str, Any] | None:
    """``nft -j`` output of ``command``; None when nft fails or says too much."""
    try:
        proc = subprocess.run([hostguard.nft_binary(), "-j", *command], capture_output=True, timeout=5, check=False)
        if proc.returncode != 0 or len(proc.stdout) > MAX_LISTING:
            return None
        listing = json.loads(proc.stdout)
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    return listing if isinstance(listing, dict) else None


def read(box_dir: Path) -> dict[str, float]:
    gid = _gid(box_dir)
    if gid is None:
        return {}
    out: dict[str, float] = {}
    refused = _refused_packets(gid)
    if refused is not None:
        out["net_connections_refused"] = float(refused)
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


__all__ = ["guard_refused", "read", "rejected"]
