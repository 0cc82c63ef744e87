"""The nftables ruleset generation of this network namespace, read over netlink.

The kernel counts committed nftables transactions per network namespace; any change to any
table (``nft flush ruleset``, another program's rules, ours) moves the number on. Reading it
is one netlink round trip (~0.1 ms) against ~20 ms for running ``nft``, so a caller that knows
the generation its own transaction produced can tell that nothing changed since. Stdlib only.
"""

from __future__ import annotations

import os
import socket
import struct

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWGEN = 15
NFT_MSG_GETGEN = 16
NFTA_GEN_ID = 1
NLMSG_ERROR = 2
NLM_F_REQUEST = 1
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_NFGEN = struct.Struct("=BBH")  # nfgenmsg: family, version, resource id
_ATTR = struct.Struct("=HH")  # nlattr: length, type
TIMEOUT = 2.0


def generation() -> int | None:
    """The current generation, or None when it cannot be read (no nf_tables, no permission)."""
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER) as sock:
            sock.settimeout(TIMEOUT)
            sock.bind((0, 0))
            seq = os.getpid() & 0xFFFF
            body = _NFGEN.pack(socket.AF_UNSPEC, 0, 0)
            kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN
            sock.send(_HEADER.pack(_HEADER.size + len(body), kind, NLM_F_REQUEST, seq, 0) + body)
            reply = sock.recv(4096)
    except OSError:
        return None
    return parse_reply(reply, seq)


def parse_reply(reply: bytes, seq: int) -> int | None:
    """NFTA_GEN_ID of a NEWGEN answer to request ``seq``; None for errors or anything else."""
    if len(reply) < _HEADER.size + _NFGEN.size:
        return None
    length, kind, _, got_seq, _ = _HEADER.unpack_from(reply)
    if kind != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN or got_seq != seq or not length <= len(reply):
        return None
    at = _HEADER.size + _NFGEN.size
    while at + _ATTR.size <= length:
        size, attr = _ATTR.unpack_from(reply, at)
        if size < _ATTR.size or at + size > length:
            return None
        if attr & 0x3FFF == NFTA_GEN_ID and size == _ATTR.size + 4:
            return int(struct.unpack_from("!I", reply, at + _ATTR.size)[0])
        at += (size + 3) & ~3
    return None
