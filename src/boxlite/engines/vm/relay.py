"""Multiplex many host clients onto the VM's single agent stream.

Frames are relayed unchanged except for the 32-bit channel field of the header: each
(client, client channel) pair gets a unique channel on the guest stream. Only REQUEST bodies
are peeked at (their ``op``) and exec RESPONSE bodies (``ok``), to know when a channel is
finished and its mapping can be freed. When a client disconnects, its running executions are
killed with a CONTROL ``kill`` frame, as the agent does for a dropped connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ...agent import protocol as p

log = logging.getLogger(__name__)
KILL = json.dumps({"op": "kill"}).encode()
_MAX_CHANNEL = 0xFFFFFFFF


@dataclass(eq=False)
class Client:
    """One host connection to the shim."""

    writer: asyncio.StreamWriter | None
    channels: dict[int, int] = field(default_factory=dict)  # client channel -> guest channel
    on_frame: Callable[[int, int, bytes], None] | None = None  # in-process clients (the shim)

    def deliver(self, kind: int, channel: int, payload: bytes) -> None:
        if self.on_frame is not None:
            self.on_frame(kind, channel, payload)
        elif self.writer is not None and not self.writer.is_closing():
            self.writer.write(p.HEADER.pack(len(payload), kind, channel) + payload)


@dataclass(eq=False)
class Route:
    client: Client | None  # None once the client is gone (frames are dropped)
    channel: int
    is_exec: bool
    ended: set[int] = field(default_factory=set)  # STDOUT/STDERR end-of-stream and EXIT seen

    def finished_by(self, kind: int, payload: bytes) -> bool:
        """Whether this frame completes the channel. An exec is over once its EXIT and the end
        of both output streams have passed (output may trail the EXIT frame); any other
        request is over with its RESPONSE, and so is an exec whose start failed."""
        if kind == p.RESPONSE:
            return not (self.is_exec and _ok(payload))
        if kind == p.EXIT or (kind in (p.STDOUT, p.STDERR) and not payload):
            self.ended.add(kind)
        return self.ended >= {p.EXIT, p.STDOUT, p.STDERR}


class Relay:
    """Owns the guest stream; clients are attached with :meth:`serve_client`."""

    def __init__(self, guest: asyncio.StreamWriter) -> None:
        self.guest = guest
        self.routes: dict[int, Route] = {}
        self._next = 1
        self.clients: set[Client] = set()

    # --- guest -> clients ---------------------------------------------------------------
    async def pump_guest(self, reader: asyncio.StreamReader) -> None:
        """Read frames from the guest until EOF and route them to their clients."""
        frames = p.FrameReader()
        while True:
            data = await reader.read(1 << 18)
            if not data:
                return
            frames.feed(data)
            for kind, channel, payload in frames:
                self._from_guest(kind, channel, payload)

    def _from_guest(self, kind: int, gid: int, payload: bytes) -> None:
        route = self.routes.get(gid)
        if route is None:
            return
        if route.client is not None:
            route.client.deliver(kind, route.channel, payload)
        if route.finished_by(kind, payload):
            self._free(gid)

    def _free(self, gid: int) -> None:
        route = self.routes.pop(gid, None)
        if route is not None and route.client is not None and route.client.channels.get(route.channel) == gid:
            del route.client.channels[route.channel]

    # --- clients -> guest ---------------------------------------------------------------
    def _allocate(self) -> int:
        while True:
            gid = self._next
            self._next = self._next % _MAX_CHANNEL + 1
            if gid not in self.routes:
                return gid

    def send(self, client: Client, kind: int, channel: int, payload: bytes) -> None:
        """Forward one frame of ``client`` to the guest with its channel renumbered."""
        gid = client.channels.get(channel)
        if kind == p.REQUEST:
            if gid is None:
                gid = self._allocate()
                client.channels[channel] = gid
            self.routes[gid] = Route(client, channel, _op(payload) == "exec")
        elif gid is None:
            return  # stray frame for a finished or unknown channel
        self.guest.write(p.HEADER.pack(len(payload), kind, gid) + payload)

    def attach(self, client: Client) -> None:
        self.clients.add(client)

    def detach(self, client: Client) -> None:
        """Forget ``client``: kill its executions, drop its pending answers."""
        self.clients.discard(client)
        for gid in list(client.channels.values()):
            route = self.routes.get(gid)
            if route is None:
                continue
            route.client = None
            if route.is_exec:
                self.guest.write(p.HEADER.pack(len(KILL), p.CONTROL, gid) + KILL)
        client.channels.clear()

    async def serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = Client(writer)
        self.attach(client)
        frames = p.FrameReader()
        try:
            while True:
                data = await reader.read(1 << 18)
                if not data:
                    break
                frames.feed(data)
                for kind, channel, payload in frames:
                    self.send(client, kind, channel, payload)
        except (p.FrameError, ConnectionError) as e:
            log.info("client dropped: %s", e)
        finally:
            self.detach(client)
            writer.close()

    def close_clients(self) -> None:
        for client in list(self.clients):
            if client.writer is not None:
                client.writer.close()
        self.clients.clear()


def _op(payload: bytes) -> str | None:
    try:
        op = json.loads(payload).get("op")
    except (ValueError, AttributeError):
        return None
    return op if isinstance(op, str) else None


def _ok(payload: bytes) -> bool:
    try:
        return bool(json.loads(payload).get("ok"))
    except (ValueError, AttributeError):
        return False


class InternalClient:
    """A request/response client living inside the shim (readiness ping, shutdown)."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.client = Client(None, on_frame=self._on_frame)
        relay.attach(self.client)
        self._waiters: dict[int, asyncio.Future[dict[str, object]]] = {}
        self._next = 1

    def _on_frame(self, kind: int, channel: int, payload: bytes) -> None:
        fut = self._waiters.pop(channel, None)
        if fut is not None and not fut.done() and kind == p.RESPONSE:
            fut.set_result(p.decode_json(payload))

    def request(self, body: dict[str, object]) -> Awaitable[dict[str, object]]:
        channel, self._next = self._next, self._next + 1
        fut: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        self._waiters[channel] = fut
        self.relay.send(self.client, p.REQUEST, channel, json.dumps(body).encode())
        return fut
