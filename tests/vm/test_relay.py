"""The shim's relay: channel renumbering between many clients and one guest stream (no VM)."""

from __future__ import annotations

import asyncio
import json
import socket

from boxlite.agent import protocol as p
from boxlite.engines.vm.relay import Relay

_tasks: set[asyncio.Task[None]] = set()


async def _setup() -> tuple[Relay, asyncio.StreamReader, asyncio.StreamWriter, asyncio.Task[None]]:
    """A relay whose guest side is a socketpair end we play the agent on."""
    relay_end, guest_end = socket.socketpair()
    r, w = await asyncio.open_unix_connection(sock=relay_end)
    relay = Relay(w)
    pump = asyncio.create_task(relay.pump_guest(r))
    gr, gw = await asyncio.open_unix_connection(sock=guest_end)
    return relay, gr, gw, pump


async def _client(relay: Relay) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    a, b = socket.socketpair()
    sr, sw = await asyncio.open_unix_connection(sock=a)
    _tasks.add(asyncio.create_task(relay.serve_client(sr, sw)))
    return await asyncio.open_unix_connection(sock=b)


async def _read_frames(reader: asyncio.StreamReader, n: int) -> list[tuple[int, int, bytes]]:
    fr = p.FrameReader()
    out: list[tuple[int, int, bytes]] = []
    while len(out) < n:
        data = await asyncio.wait_for(reader.read(65536), 5)
        assert data
        fr.feed(data)
        out.extend(fr)
    return out


async def test_same_client_channel_from_two_clients_is_kept_apart() -> None:
    relay, gr, gw, pump = await _setup()
    (r1, w1), (r2, w2) = await _client(relay), await _client(relay)
    w1.write(p.encode_json(p.REQUEST, 5, {"op": "ping", "who": 1}))
    await asyncio.sleep(0.05)
    w2.write(p.encode_json(p.REQUEST, 5, {"op": "ping", "who": 2}))
    frames = await _read_frames(gr, 2)
    (_, g1, b1), (_, g2, b2) = frames
    assert g1 != g2
    assert json.loads(b1)["who"] == 1 and json.loads(b2)["who"] == 2
    # answer in reverse order: each client gets its answer on its own channel 5
    gw.write(p.encode_json(p.RESPONSE, g2, {"ok": True, "to": 2}))
    gw.write(p.encode_json(p.RESPONSE, g1, {"ok": True, "to": 1}))
    ((k1, c1, a1),) = await _read_frames(r1, 1)
    ((k2, c2, a2),) = await _read_frames(r2, 1)
    assert (k1, c1, json.loads(a1)["to"]) == (p.RESPONSE, 5, 1)
    assert (k2, c2, json.loads(a2)["to"]) == (p.RESPONSE, 5, 2)
    assert not relay.routes  # plain responses free their channel
    pump.cancel()


async def test_exec_channel_lives_until_exit_and_disconnect_kills() -> None:
    relay, gr, gw, pump = await _setup()
    r1, w1 = await _client(relay)
    w1.write(p.encode_json(p.REQUEST, 1, {"op": "exec", "argv": ["sleep", "9"]}))
    ((_, g, _),) = await _read_frames(gr, 1)
    gw.write(p.encode_json(p.RESPONSE, g, {"ok": True, "pid": 7}))
    gw.write(p.encode(p.STDOUT, g, b"hi"))
    frames = await _read_frames(r1, 2)
    assert [(k, c) for k, c, _ in frames] == [(p.RESPONSE, 1), (p.STDOUT, 1)]
    w1.write(p.encode(p.STDIN, 1, b"in"))
    ((k, c, payload),) = await _read_frames(gr, 1)
    assert (k, c, payload) == (p.STDIN, g, b"in")
    w1.close()  # client goes away with the exec running: the relay kills it in the guest
    ((k, c, payload),) = await _read_frames(gr, 1)
    assert (k, c, json.loads(payload)) == (p.CONTROL, g, {"op": "kill"})
    gw.write(p.encode_json(p.EXIT, g, {"exit_code": 137}))
    await asyncio.sleep(0.05)
    assert g in relay.routes  # output may still trail the EXIT frame
    gw.write(p.encode(p.STDOUT, g, b"") + p.encode(p.STDERR, g, b""))
    await asyncio.sleep(0.05)
    assert g not in relay.routes  # EXIT and both ends of stream: the channel is done
    pump.cancel()


async def test_failed_exec_frees_channel_and_stray_frames_are_dropped() -> None:
    relay, gr, gw, pump = await _setup()
    r1, w1 = await _client(relay)
    w1.write(p.encode_json(p.REQUEST, 3, {"op": "exec", "argv": ["nope"]}))
    ((_, g, _),) = await _read_frames(gr, 1)
    gw.write(p.encode_json(p.RESPONSE, g, p.error_body("ExecError", "not found")))
    await _read_frames(r1, 1)
    assert not relay.routes
    w1.write(p.encode(p.STDIN, 3, b"late"))  # no route: dropped, not sent with a bogus channel
    gw.write(p.encode_json(p.EXIT, 12345, {"exit_code": 0}))  # unknown guest channel: dropped
    w1.write(p.encode_json(p.REQUEST, 4, {"op": "ping"}))
    ((k, _, body),) = await _read_frames(gr, 1)
    assert k == p.REQUEST and json.loads(body)["op"] == "ping"
    pump.cancel()
