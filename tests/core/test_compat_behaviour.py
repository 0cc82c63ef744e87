"""Issue 10: behaviour BoxLite users rely on without noticing (network on by default,
background processes outliving their exec, exec timeouts as results, copy_in placement, ids,
list order, option defaults and combinations, masked secrets). Engine-agnostic."""

from __future__ import annotations

import asyncio
import os
import socket
import string
from pathlib import Path

import pytest

import boxlite
from boxlite.api.options import BoxOptions, ImageRegistry, Options
from support.boxnc import nc
from support.tcpreply import first_reply

SERVER = "echo ready-$1 | nc -l -p $1"


async def sh(box: boxlite.SimpleBox, script: str, timeout: float | None = None) -> boxlite.ExecResult:
    return await box.exec("sh", "-c", script, timeout=timeout)


async def listening(box: boxlite.SimpleBox, port: int) -> bool:
    """Is some box process listening on TCP ``port`` (state 0A in /proc/net/tcp{,6})?"""
    table = (await box.exec("cat", "/proc/net/tcp", "/proc/net/tcp6")).stdout
    rows = [f for f in map(str.split, table.splitlines()) if len(f) > 3]
    return any(f[1].endswith(f":{port:04X}") and f[3] == "0A" for f in rows)


async def wait_listening(box: boxlite.SimpleBox, port: int) -> None:
    for _ in range(300):
        if await listening(box, port):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


# --- 1. network ----------------------------------------------------------------------------
async def test_network_is_on_unless_disabled(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    rootfs = str(busybox_rootfs)
    for network, expect_nic in (
        (None, True),
        ("disabled", False),
        (boxlite.NetworkSpec(mode="disabled"), False),
        (boxlite.NetworkSpec(mode="enabled"), True),
    ):
        kwargs = {} if network is None else {"network": network}
        async with boxlite.SimpleBox(rootfs_path=rootfs, runtime=runtime, **kwargs) as box:
            routes = (await box.exec("cat", "/proc/net/route")).stdout.splitlines()[1:]
            has_default = any(row.split()[1] == "00000000" for row in routes)
            assert has_default is expect_nic, (network, routes)


# --- 3. background processes ---------------------------------------------------------------
async def test_background_server_outlives_its_exec(box: boxlite.SimpleBox) -> None:
    """The ``sh -c "server &"`` pattern: the server keeps serving after the exec returned."""
    started = await sh(box, f"(while true; do {SERVER.replace('$1', '7001')}; done) >/dev/null 2>&1 &")
    assert started.exit_code == 0
    await wait_listening(box, 7001)
    await asyncio.sleep(0.3)  # a later connection, from a later exec
    reply = await sh(box, nc("127.0.0.1 7001", timeout=10))  # reads until the server closes
    assert reply.stdout.strip() == "ready-7001", reply
    # Output still held open by the background process does not keep the exec from ending.
    held = await sh(box, "sleep 60 & echo started", timeout=20)
    assert (held.exit_code, held.stdout.strip(), held.timed_out) == (0, "started", False)
    assert "sleep 60" in (await box.exec("ps")).stdout


async def test_background_process_writing_to_its_exec_output_survives(box: boxlite.SimpleBox) -> None:
    """``nohup server &`` keeps the exec's stdout when it is a pipe: the server writing its log
    there after the exec ended must not be killed by SIGPIPE."""
    started = await sh(box, "(sleep 0.5; while true; do echo tick; echo tock >&2; sleep 0.1; done) &")
    assert started.exit_code == 0
    await asyncio.sleep(1.5)  # it wrote a few lines after its exec ended
    for _ in range(3):  # the loop is either sleeping or between two sleeps: look a few times
        ps = (await box.exec("ps", "-o", "pid,args")).stdout
        if "sleep 0.1" in ps:
            break
        await asyncio.sleep(0.05)
    assert "sleep 0.1" in ps, ps


async def test_timeout_and_kill_end_the_whole_process_group(box: boxlite.SimpleBox) -> None:
    result = await sh(box, "sleep 301 & sleep 302", timeout=0.5)
    assert result.timed_out and result.exit_code != 0 and not result.ok
    execution = await box.box.exec("sh", ["-c", "sleep 303 & sleep 304"], stdin=False)
    await asyncio.sleep(0.3)
    await execution.kill()
    await execution.wait()
    for _ in range(50):
        ps = (await box.exec("ps")).stdout
        if not any(f"sleep {n}" in ps for n in (301, 302, 303, 304)):
            break
        await asyncio.sleep(0.05)
    assert not any(f"sleep {n}" in ps for n in (301, 302, 303, 304)), ps


async def test_stopping_the_box_ends_background_processes(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    box = await runtime.create(BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=False, network="disabled"))
    await box.start()
    execution = await box.exec("sh", ["-c", "sleep 305 >/dev/null 2>&1 &"], stdin=False)
    await execution.wait()
    await box.stop()
    await box.start()
    ps = await box.exec("ps", [], stdin=False)
    out = await ps.stdout().read()
    await ps.wait()
    assert "sleep 305" not in out
    await box.stop()
    await runtime.remove(box.id)


# --- 4. exec timeout, copy_in ----------------------------------------------------------------
async def test_exec_timeout_is_a_result_not_an_exception(box: boxlite.SimpleBox) -> None:
    result = await sh(box, "echo before; sleep 30", timeout=2)  # time for the echo under load
    assert result.timed_out and result.exit_code != 0
    assert result.stdout == "before\n"
    assert (await box.exec("true", timeout=5)).ok  # a finished command within its timeout


async def test_copy_in_directory_lands_under_dest(box: boxlite.SimpleBox, tmp_path: Path) -> None:
    src = tmp_path / "proj"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "mod.py").write_text("x = 1\n")
    await sh(box, "mkdir -p /app /flat")
    await box.copy_in(str(src), "/app")  # include_parent=True: /app/proj/...
    assert (await box.exec("cat", "/app/proj/pkg/mod.py")).stdout == "x = 1\n"
    await box.copy_in(str(src), "/flat", include_parent=False)  # the contents only
    assert (await box.exec("cat", "/flat/pkg/mod.py")).stdout == "x = 1\n"
    assert (await box.exec("ls", "/flat")).stdout.split() == ["pkg"]
    (src / "pkg" / "mod.py").write_text("x = 2\n")
    (src / "new.txt").write_text("new\n")
    await box.copy_in(str(src), "/app", overwrite=False)  # existing files are kept, new ones added
    assert (await box.exec("cat", "/app/proj/new.txt")).stdout == "new\n"
    assert (await box.exec("cat", "/app/proj/pkg/mod.py")).stdout == "x = 1\n"
    await box.copy_in(str(src), "/app", overwrite=True)
    assert (await box.exec("cat", "/app/proj/pkg/mod.py")).stdout == "x = 2\n"


async def test_copy_in_follow_symlinks(box: boxlite.SimpleBox, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("target\n")
    src = tmp_path / "linked"
    src.mkdir()
    (src / "link").symlink_to(outside)
    await box.copy_in(str(src), "/tmp")  # default: the link itself
    assert (await box.exec("readlink", "/tmp/linked/link")).stdout.strip() == str(outside)
    await box.copy_in(str(src), "/tmp/followed", follow_symlinks=True)  # the target's content
    assert (await sh(box, "test -L /tmp/followed/link || cat /tmp/followed/link")).stdout == "target\n"


# --- 5. ids, order, defaults, combinations, ports ----------------------------------------------
async def test_ids_and_list_order(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    opts = BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=False)
    first = await runtime.create(opts)
    second = await runtime.create(opts)
    alphabet = set(string.ascii_letters + string.digits)
    for box in (first, second):
        assert len(box.id) == 12 and set(box.id) <= alphabet, box.id
    assert first.id != second.id
    listed = [info.id for info in await runtime.list_info()]
    assert listed[:2] == [second.id, first.id]  # newest first
    for box in (first, second):
        await runtime.remove(box.id)


def test_option_defaults_and_rejected_combinations(busybox_rootfs: Path) -> None:
    opts = BoxOptions(rootfs_path=str(busybox_rootfs))
    config = opts.to_config()
    assert (opts.memory_mib, config.auto_remove, config.detach, config.network) == (512, True, False, True)
    with pytest.raises(boxlite.ConfigError, match="detach"):
        BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=True, detach=True).to_config()
    with pytest.raises(boxlite.ConfigError, match="detach"):
        BoxOptions(rootfs_path=str(busybox_rootfs), auto_delete=5, detach=True).to_config()
    detached = BoxOptions(rootfs_path=str(busybox_rootfs), detach=True).to_config()
    assert detached.detach and not detached.auto_remove
    assert not BoxOptions(rootfs_path=str(busybox_rootfs), auto_delete=0).to_config().auto_remove
    assert BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=False, auto_delete=1).to_config().auto_remove
    with pytest.raises(boxlite.ConfigError, match="auto_delete"):
        BoxOptions(rootfs_path=str(busybox_rootfs), auto_delete=-1).to_config()
    assert BoxOptions(rootfs_path=str(busybox_rootfs), auto_pause=60).to_config().auto_pause == 60
    with pytest.raises(boxlite.ConfigError, match="auto_pause"):
        BoxOptions(rootfs_path=str(busybox_rootfs), auto_pause=-1).to_config()
    with pytest.raises(boxlite.ConfigError, match="disabled"):
        BoxOptions(rootfs_path=str(busybox_rootfs), network="disabled", ports=[(8080, 80)]).to_config()


def test_port_without_host_port_gets_a_free_one(busybox_rootfs: Path) -> None:
    config = BoxOptions(rootfs_path=str(busybox_rootfs), ports=[{"guest_port": 3000}]).to_config()
    (port,) = config.ports
    assert port.guest_port == 3000 and 0 < port.host_port < 65536
    with socket.socket() as s:
        s.bind(("127.0.0.1", port.host_port))  # it was free


async def test_port_without_host_port_is_published(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    opts = BoxOptions(rootfs_path=str(busybox_rootfs), ports=[{"guest_port": 7002}], auto_remove=False)
    box = await runtime.create(opts)
    try:
        rec = runtime._backend.core.record(box.id)  # type: ignore[attr-defined]
        (port,) = rec.config.ports
        await box.start()
        server = await box.exec("sh", ["-c", SERVER.replace("$1", "7002")], stdin=False)
        assert await first_reply(port.host_port) == b"ready-7002\n"
        await server.wait()
    finally:
        await box.stop()
        await runtime.remove(box.id)


async def test_volume_host_path_is_checked_at_start(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, tmp_path: Path
) -> None:
    later = tmp_path / "made-later"
    opts = BoxOptions(rootfs_path=str(busybox_rootfs), volumes=[(str(later), "/data")], auto_remove=False)
    box = await runtime.create(opts)  # BoxLite checks at start: the directory may come later
    with pytest.raises(boxlite.ConfigError, match="does not exist"):
        await box.start()
    later.mkdir()
    (later / "f").write_text("here\n")
    await box.start()
    cat = await box.exec("cat", ["/data/f"], stdin=False)
    assert (await cat.stdout().read()) == "here\n"
    await cat.wait()
    await box.stop()
    await runtime.remove(box.id)


# --- 6. secrets masked ----------------------------------------------------------------------
def test_repr_masks_registry_secrets() -> None:
    basic = ImageRegistry(host="registry.example", username="alice", password="hunter2-secret")
    bearer = ImageRegistry(host="ghcr.example", bearer_token="tok-secret-value")
    options = Options(home_dir="/tmp/x", image_registries=[basic, bearer])
    for text in (repr(basic), repr(bearer), repr(options), str(options)):
        assert "hunter2-secret" not in text and "tok-secret-value" not in text, text
    assert "alice" in repr(basic) and "registry.example" in repr(options)
    assert basic.password == "hunter2-secret"  # masked in text only


async def test_background_writers_cannot_exhaust_the_agent(box: boxlite.SimpleBox, engine: str) -> None:
    """Every ended exec whose output a background process still holds costs the agent a pipe it
    keeps draining: at most MAX_SINKS of them; beyond, the pipe is closed as before."""
    from boxlite.agent.server import MAX_SINKS

    def agent_fds() -> int | None:
        pid = box.info().state.pid
        try:
            return len(os.listdir(f"/proc/{pid}/fd")) if engine == "namespace" and pid else None
        except OSError:
            return None

    before = agent_fds()
    for _ in range(MAX_SINKS // 2 + 40):  # two held pipes (stdout, stderr) each
        assert (await sh(box, "sleep 600 &")).exit_code == 0
    assert (await box.exec("echo", "still-serving")).stdout == "still-serving\n"
    after = agent_fds()
    if before is not None and after is not None:
        assert after - before <= MAX_SINKS + 8, (before, after)
