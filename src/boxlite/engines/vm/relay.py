"""Multiplex many host clients onto the VM's single agent stream (routing only, no I/O).

Frames are relayed unchanged except for the 32-bit channel field of the header: each
(client, client channel) pair gets a unique channel on the guest stream. Only REQUEST bodies
are peeked at (their ``op``) and exec RESPONSE bodies (``ok``), to know when a channel is
finished and its mapping can be freed. When a client disconnects, its running executions are
killed with a CONTROL ``kill`` frame, as the agent does for a dropped connection.

*Detached* executions (the box's main process: ``exec`` with ``detach``) are the relay's own:
their output is appended to a log file on the host (``open_log``), where ``boxlite logs``
reads it as for a namespace box, credit is granted as it is written, and the client that
asked gets only the RESPONSE (its disconnecting does not kill the process). The end of the
one marked ``main`` (the box's main process) goes to ``on_main_exit``: the box ends with it.

The caller moves the bytes (``relayd.py``: a ``selectors`` loop): it feeds what the guest
sends to :meth:`Relay.feed_guest` and each client's frames to :meth:`Relay.send`; the relay
writes through the callables it was given. Stdlib only, no asyncio (the relay process stays
small: it runs for every VM box).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ...agent import leanjson
from ...agent import protocol as p
from ...agent.logfile import LogLease, log_limit
from ...filenames import MAIN_LOG_NAME

KILL = leanjson.dumps({"op": "kill"}).encode()
_MAX_CHANNEL = 0xFFFFFFFF
Write = Callable[[bytes], None]


class Client:
    """One host connection (``write`` sends it bytes), or an in-process one (``on_frame``)."""

    __slots__ = ("channels", "on_frame", "write")

    def __init__(self, write: Write | None = None, on_frame: Callable[[int, int, bytes], None] | None = None) -> None:
        self.write = write
        self.on_frame = on_frame
        self.channels: dict[int, int] = {}  # client channel -> guest channel

    def deliver(self, kind: int, channel: int, payload: bytes) -> None:
        if self.on_frame is not None:
            self.on_frame(kind, channel, payload)
        elif self.write is not None:
            self.write(p.HEADER.pack(len(payload), kind, channel) + payload)


class Route:
    """Where the frames of one guest channel go."""

    __slots__ = ("channel", "client", "ended", "is_exec")

    def __init__(self, client: Client | LogSink | None, channel: int, is_exec: bool) -> None:
        self.client = client  # None once the client is gone (frames are dropped)
        self.channel = channel
        self.is_exec = is_exec
        self.ended: set[int] = set()  # STDOUT/STDERR end-of-stream and EXIT seen

    def finished_by(self, kind: int, payload: bytes) -> bool:
        """Whether this frame completes the channel. An exec is over once its EXIT and the end
        of both output streams have passed (output may trail the EXIT frame); any other
        request is over with its RESPONSE, and so is an exec whose start failed."""
        if kind == p.RESPONSE:
            return not (self.is_exec and _ok(payload))
        if kind == p.EXIT or (kind in (p.STDOUT, p.STDERR) and not payload):
            self.ended.add(kind)
        return self.ended >= {p.EXIT, p.STDOUT, p.STDERR}


class LogSink:
    """The owner of a detached execution: output to a host file, the RESPONSE to the asker."""

    __slots__ = ("asker", "channel", "exit", "file", "gid", "main", "relay")

    def __init__(self, relay: Relay, gid: int, asker: Client, channel: int, file: LogLease) -> None:
        self.relay, self.gid, self.asker, self.channel, self.file = relay, gid, asker, channel, file
        self.main = False  # the box's main process: its end is reported to ``Relay.on_main_exit``
        self.exit: bytes | None = None  # its EXIT body, once seen

    def deliver(self, kind: int, _channel: int, payload: bytes) -> None:
        if kind == p.RESPONSE:
            if self.asker in self.relay.clients:
                self.asker.deliver(kind, self.channel, payload)
            if not _ok(payload):
                self.file.close()
        elif kind in (p.STDOUT, p.STDERR) and payload:
            try:  # capped and rotated (LOG_MAX); a full host disk drops output, never blocks the box
                self.file.write(payload)
            except OSError:
                pass
            self.relay.guest_write(p.encode_credit(self.gid, kind, len(payload)))

        elif kind == p.EXIT:
            self.exit = payload

    def finish(self) -> None:
        self.file.close()
        if self.main and self.exit is not None and self.relay.on_main_exit is not None:
            self.relay.on_main_exit(self.exit)  # after its last output reached the log


class Relay:
    """Owns the guest stream (``guest_write``); clients are attached and detached."""

    def __init__(
        self,
        guest_write: Write,
        open_log: Callable[[str, int], LogLease] | None = None,
        on_main_exit: Callable[[bytes], None] | None = None,
    ) -> None:
        self.guest_write = guest_write
        self.open_log = open_log
        self.on_main_exit = on_main_exit
        self.routes: dict[int, Route] = {}
        self.clients: set[Client] = set()
        self._frames = p.FrameReader()
        self._next = 1

    # --- guest -> clients ---------------------------------------------------------------
    def feed_guest(self, data: bytes) -> None:
        """Bytes from the guest: route every complete frame to its client."""
        self._frames.feed(data)
        for kind, channel, payload in self._frames:
            route = self.routes.get(channel)
            if route is None:
                continue
            if route.client is not None:
                route.client.deliver(kind, route.channel, payload)
            if route.finished_by(kind, payload):
                self._free(channel)

    def _free(self, gid: int) -> None:
        route = self.routes.pop(gid, None)
        if route is None or route.client is None:
            return
        if isinstance(route.client, LogSink):
            route.client.finish()
        elif route.client.channels.get(route.channel) == gid:
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
        if kind == p.REQUEST and self.open_log is not None and gid is None:
            body = _detached(payload)
            if body is not None:
                self._start_logged(client, channel, body)
                return
        if kind == p.REQUEST:
            if gid is None:
                gid = self._allocate()
                client.channels[channel] = gid
            self.routes[gid] = Route(client, channel, _op(payload) == "exec")
        elif gid is None:
            return  # stray frame for a finished or unknown channel
        self.guest_write(p.HEADER.pack(len(payload), kind, gid) + payload)

    def _start_logged(self, client: Client, channel: int, body: dict[str, object]) -> None:
        """A detached exec: ours to keep, its output appended to the host log it names."""
        assert self.open_log is not None
        name = os.path.basename(str(body.pop("log", None) or MAIN_LOG_NAME)) or MAIN_LOG_NAME
        body.pop("detach", None)
        main = bool(body.get("main"))  # the agent ends its output soon after its exit
        limit = log_limit(body.pop("log_max", None))
        body["stdin"] = False
        try:
            file = self.open_log(name, limit)
        except OSError as e:
            error = p.error_body("EngineError", f"cannot open the log {name}: {e.strerror or e}")
            client.deliver(p.RESPONSE, channel, leanjson.dumps(error).encode())
            return
        gid = self._allocate()
        sink = LogSink(self, gid, client, channel, file)
        sink.main = main
        self.routes[gid] = Route(sink, channel, True)
        payload = leanjson.dumps(body).encode()
        self.guest_write(p.HEADER.pack(len(payload), p.REQUEST, gid) + payload)

    def attach(self, client: Client) -> None:
        self.clients.add(client)

    def next_channel(self) -> int:
        """The next guest channel to hand out (saved with the guest: a resumed relay must not
        reuse channels the agent may still have open)."""
        return self._next

    def set_next_channel(self, value: int) -> None:
        self._next = min(max(1, value), _MAX_CHANNEL)

    def detach(self, client: Client) -> None:
        """Forget ``client``: kill its executions, drop its pending answers."""
        self.clients.discard(client)
        for gid in list(client.channels.values()):
            route = self.routes.get(gid)
            if route is None:
                continue
            route.client = None
            if route.is_exec:
                self.guest_write(p.HEADER.pack(len(KILL), p.CONTROL, gid) + KILL)
        client.channels.clear()


def _detached(payload: bytes) -> dict[str, object] | None:
    """The body of a detached ``exec`` request, else None."""
    try:
        body = leanjson.loads(payload)
    except ValueError:
        return None
    if isinstance(body, dict) and body.get("op") == "exec" and body.get("detach"):
        return body
    return None


def _op(payload: bytes) -> str | None:
    try:
        op = leanjson.loads(payload).get("op")
    except (ValueError, AttributeError):
        return None
    return op if isinstance(op, str) else None


def _ok(payload: bytes) -> bool:
    try:
        return bool(leanjson.loads(payload).get("ok"))
    except (ValueError, AttributeError):
        return False
