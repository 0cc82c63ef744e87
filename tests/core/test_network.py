"""Box networking: outbound network by default (BoxLite's default), loopback only with
``network="disabled"``; published ports (pasta for namespace boxes, QEMU's user-mode network for
VM boxes); never the host itself."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import boxlite
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


async def test_enabled_network_does_not_reach_host_loopback(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, host_echo_server: int
) -> None:
    """The default gateway is not the host: a loopback-only host service stays out of reach
    (issue 18; tests/security/test_sec_host_network.py covers every other way in)."""
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime, network="enabled") as box:
        gw = await box.exec("sh", "-c", "ip route | awk '/default/ {print $3}'", timeout=10)
        assert gw.stdout.strip(), gw
        command = f"timeout 5 nc -w 3 {gw.stdout.strip()} {host_echo_server} </dev/null"
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
