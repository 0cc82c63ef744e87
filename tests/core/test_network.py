"""Box networking: outbound network by default (BoxLite's default), loopback only with
``network="disabled"``; published ports (pasta for namespace boxes, QEMU's user-mode network for
VM boxes); never the host itself."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import boxlite
from boxlite.engines.net import hostguard
from support.boxnc import nc
from support.hostprocs import free_port
from support.tcpreply import first_reply


@pytest.fixture
def host_echo_server() -> Iterator[int]:
    """A TCP server on the host's loopback answering 'pong' once per connection."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(20)

    def serve() -> None:
        try:
            while True:
                conn, _ = srv.accept()
                with conn:
                    conn.sendall(b"pong\n")
        except OSError:
            pass

    threading.Thread(target=serve, daemon=True).start()
    yield int(srv.getsockname()[1])
    srv.close()


async def test_disabled_network_is_loopback_only(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime, network="disabled") as box:
        devices = await box.exec("cat", "/proc/net/dev")
    assert [line.split(":")[0].strip() for line in devices.stdout.splitlines()[2:]] == ["lo"]


async def test_default_network_has_a_default_route(box: boxlite.SimpleBox) -> None:
    """No ``network`` option: an interface besides ``lo`` and a default route, as in BoxLite."""
    devices = await box.exec("cat", "/proc/net/dev")
    assert [line.split(":")[0].strip() for line in devices.stdout.splitlines()[2:]] != ["lo"]
    routes = await box.exec("cat", "/proc/net/route")
    assert any(row.split()[1] == "00000000" for row in routes.stdout.splitlines()[1:]), routes.stdout


async def test_published_port_reaches_the_box(runtime: boxlite.Boxlite, busybox_rootfs: Path, engine: str) -> None:
    port = free_port()
    rt = runtime
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=rt, ports=[(port, 8080)]) as box:
        server = await box.box.exec("sh", ["-c", "echo hello-from-box | nc -l -p 8080"], stdin=False)
        assert await first_reply(port) == b"hello-from-box\n"
        await server.wait()
        pid_file = rt.home.box_dir(box.id) / "pasta.pid"
        pasta_pid = int(pid_file.read_text()) if engine == "namespace" else None
    if pasta_pid is not None:
        comm = Path(f"/proc/{pasta_pid}/comm")
        assert not comm.exists() or comm.read_text().strip() != "pasta", "pasta outlived its box"
    with pytest.raises(OSError):  # the port is closed with the box
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5353))
print("ready", flush=True)
data, peer = s.recvfrom(512)
s.sendto(b"echo:" + data, peer)
"""


async def test_published_udp_port_reaches_the_box(runtime: boxlite.Boxlite, engine: str) -> None:
    """``ports=[(host, box, "udp")]``: a datagram to the host port reaches a UDP server in the
    box and its answer comes back (pasta ``-u`` on the namespace engine, QEMU hostfwd on the VM)."""
    import asyncio

    from support.images import python_rootfs

    port = free_port()
    async with boxlite.SimpleBox(rootfs_path=str(python_rootfs()), runtime=runtime, ports=[(port, 5353, "udp")]) as box:
        server = await box.box.exec("python3", ["-c", UDP_ECHO], stdin=False)
        lines = aiter(server.stdout())
        assert (await asyncio.wait_for(anext(lines), 120)).strip() == "ready"
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.settimeout(0.5)
        try:
            reply = None
            for _ in range(60):  # datagrams sent before the forwarding is in place are lost: resend
                client.sendto(b"ping", ("127.0.0.1", port))
                try:
                    reply = client.recv(512)
                    break
                except TimeoutError:
                    continue
        finally:
            client.close()
        assert reply == b"echo:ping"
        assert (await asyncio.wait_for(server.wait(), 30)).exit_code == 0


async def test_enabled_network_does_not_reach_host_loopback(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, host_echo_server: int
) -> None:
    """The default gateway is not the host: a loopback-only host service stays out of reach
    (issue 18; tests/security/test_sec_host_network.py covers every other way in)."""
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime, network="enabled") as box:
        gw = await box.exec("sh", "-c", "ip route | awk '/default/ {print $3}'", timeout=10)
        assert gw.stdout.strip(), gw
        command = nc(f"-w 3 {gw.stdout.strip()} {host_echo_server}", timeout=5)
        result = await box.exec("sh", "-c", command, timeout=15)
        assert "pong" not in result.stdout, (gw, result)
        resolv = await box.exec("cat", "/etc/resolv.conf")
        assert resolv.stdout.startswith("nameserver ")
        assert (await box.exec("sh", "-c", "echo x > /etc/resolv.conf")).exit_code != 0  # read-only


async def test_network_option_errors(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    for bad, match in (
        ({"ports": [(0, 80)]}, "between 1 and 65535"),
        ({"ports": [(80, 80, "sctp")]}, "tcp or udp"),
        ({"ports": [(8080, 80)], "network": "disabled"}, "disabled"),
        ({"network": "bridged"}, "network mode"),
    ):
        with pytest.raises(boxlite.ConfigError, match=match):
            await runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), **bad))


async def test_a_published_port_is_free_again_when_stop_returns(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    """stop() then start() of a box with a published port binds the same host port again at
    once: whatever held it (pasta; QEMU) is gone by the time stop() returns."""
    port = free_port()
    opts = boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), ports=[(port, 8080)], auto_remove=False)
    box = await runtime.create(opts)
    try:
        for round_ in range(3):
            server = await box.exec("sh", ["-c", f"echo round-{round_} | nc -l -p 8080"], stdin=False)
            assert await first_reply(port) == f"round-{round_}\n".encode()
            await server.wait()
            await box.stop()
            await box.start()
    finally:
        await runtime.remove(box.id, force=True)


@pytest.fixture
def netns_fd() -> Iterator[int]:
    """An fd of a fresh network namespace (held by a sleeping process)."""
    import subprocess

    holder = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    try:
        for _ in range(200):
            if os.readlink(f"/proc/{holder.pid}/ns/net") != os.readlink("/proc/self/ns/net"):
                break
            time.sleep(0.01)
        fd = os.open(f"/proc/{holder.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        yield fd
        os.close(fd)
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.namespace_only
def test_the_keepers_port_rules_fail_clearly_and_in_time(
    netns_fd: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keeper loads the box's UDP port moves with nft inside the box's namespace: rules nft
    refuses come back as a message (the box does not start without its ports), and an nft that
    hangs is killed at the deadline; its output is cut at the keeper's helper-log cap."""
    from boxlite.agent import keeper
    from boxlite.engines.namespace import network

    nft = hostguard.nft_binary()
    rules = network.udp_port_redirects([("127.0.0.1", 5300, 53, "udp")])
    assert rules is not None and keeper._netns_nft(netns_fd, nft, rules) is None
    inside = ["nsenter", f"--net=/proc/self/fd/{netns_fd}", nft, "list", "table", "inet", network.PORTS_TABLE]
    listed = subprocess.run(inside, capture_output=True, text=True, pass_fds=[netns_fd], check=True)
    assert "udp dport 5300 redirect to :53" in listed.stdout
    host_tables = subprocess.run([nft, "list", "tables"], capture_output=True, text=True).stdout
    assert network.PORTS_TABLE not in host_tables  # the box's namespace only
    refused = keeper._netns_nft(netns_fd, nft, "add rule inet nowhere nothing\n")
    assert refused is not None and refused.startswith("nft refused the box's port rules")
    chatty = tmp_path / "nft"
    chatty.write_text("#!/bin/sh\nhead -c 1000000 /dev/zero | tr '\\0' x\nexec sleep 60\n")
    chatty.chmod(0o755)
    monkeypatch.setattr(keeper, "NFT_TIMEOUT", 1.0)
    started = time.monotonic()
    assert keeper._netns_nft(netns_fd, str(chatty), rules) == "nft did not finish within 1s"
    assert time.monotonic() - started < 5


def test_udp_port_moves_touch_only_moved_ports() -> None:
    """Only UDP ports published to another box port get rules; TCP and equal ports need none."""
    from boxlite.engines.namespace import network

    assert network.udp_port_redirects([("127.0.0.1", 80, 8080, "tcp"), ("0.0.0.0", 53, 53, "udp")]) is None
    rules = network.udp_port_redirects([("127.0.0.1", 5300, 53, "udp"), ("127.0.0.1", 80, 8080, "tcp")])
    assert rules is not None and rules.count("redirect") == 3 and "8080" not in rules
