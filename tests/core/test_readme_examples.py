"""What README.md and docs/cli.md promise, through the SDK: low ports in the box, a box that
ends with its main process, SimpleBox() on the default image offline, no leftover box after a
failed start, 126 for a bad working directory, OOM kills said as such, the TCG notice."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

import boxlite
from boxlite.agent import mainexit
from boxlite.engines.vm import accel, verdict
from support.images import CACHE, build_busybox_rootfs, python_rootfs


async def _until_not_running(box: boxlite.Box, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while box.info().state.running:
        assert loop.time() < deadline, "the box is still running"
        await asyncio.sleep(0.05)


# --- low ports ------------------------------------------------------------------------------
async def test_box_processes_bind_ports_below_1024(box: boxlite.SimpleBox) -> None:
    before = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text()
    for user, port in (("root", "80"), ("user", "81")):  # busybox httpd binds, then goes to the background
        result = await box.exec("httpd", "-p", port, "-h", "/", user=user, timeout=30)
        assert (result.exit_code, result.stderr) == (0, ""), (user, result)
    assert Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text() == before  # the host's is untouched


# --- the main process -----------------------------------------------------------------------
async def test_box_exits_with_its_main_process_and_keeps_its_status(
    runtime: boxlite.Boxlite, busybox_rootfs: Path
) -> None:
    opts = boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), cmd=["sh", "-c", "echo ran >> /root/runs; exit 3"],
                              auto_remove=False)  # fmt: skip
    box = await runtime.create(opts, name="job")
    await box.start()
    await _until_not_running(box)
    info = box.info()
    assert (info.state.status, info.state.exit_code, str(info.state)) == ("exited", 3, "exited (3)")
    assert info.state.finished_at is not None and info.to_dict()["state"]["exit_code"] == 3
    [listed] = await runtime.list_info()
    assert (listed.state.status, listed.state.exit_code) == ("exited", 3)
    assert (await runtime.get_info("job")).state.exit_code == 3  # type: ignore[union-attr]
    # Nothing of it is left running; exec does not silently run the main process again.
    with pytest.raises(boxlite.InvalidStateError, match="exited"):
        await box.exec("true")
    # It can be started again (the main process runs again) and removed.
    await box.start()
    await _until_not_running(box)
    assert box.info().state.exit_code == 3
    box_dir = runtime.home.box_dir(box.id)
    await runtime.remove("job")
    assert not box_dir.exists() and await runtime.list_info() == []


async def test_box_ends_with_its_main_process_even_if_a_child_keeps_its_output(
    runtime: boxlite.Boxlite, busybox_rootfs: Path
) -> None:
    opts = boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), cmd=["sh", "-c", "sleep 600 & echo bye; exit 2"],
                              auto_remove=False)  # fmt: skip
    box = await runtime.create(opts)
    await box.start()
    await _until_not_running(box, timeout=60)
    assert (box.info().state.status, box.info().state.exit_code) == ("exited", 2)
    assert (runtime.home.box_dir(box.id) / "run" / "main.log").read_text() == "bye\n"
    await runtime.remove(box.id)


async def test_main_process_killed_by_a_signal_exits_128_plus_n(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    opts = boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), cmd=["sh", "-c", "kill -9 $$"], auto_remove=False)
    box = await runtime.create(opts)
    await box.start()
    await _until_not_running(box)
    assert (box.info().state.status, box.info().state.exit_code) == ("exited", 137)
    await runtime.remove(box.id)


async def test_a_stopped_box_is_stopped_not_exited(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    opts = boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), cmd=["sleep", "600"], auto_remove=False)
    box = await runtime.create(opts)
    await box.start()
    await box.stop(timeout=1)
    assert (box.info().state.status, box.info().state.exit_code) == ("stopped", None)
    await runtime.remove(box.id)


async def test_main_process_that_cannot_start_ends_the_box(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    kept = await runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), cmd=["no-such-cmd"],
                                                   auto_remove=False))  # fmt: skip
    with pytest.raises(boxlite.ExecError) as err:
        await kept.start()
    assert err.value.exit_code == 127
    assert (kept.info().state.status, kept.info().state.exit_code) == ("exited", 127)
    gone = await runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), cmd=["no-such-cmd"]))
    with pytest.raises(boxlite.ExecError):
        await gone.start()
    assert [i.id for i in await runtime.list_info()] == [kept.id]  # auto_remove: removed
    await runtime.remove(kept.id)


def test_main_exit_record_from_a_hostile_box_is_not_trusted(tmp_path: Path) -> None:
    """The namespace agent (inside the box) writes the record: the host reads only a small
    regular file with well-formed numbers."""
    run = tmp_path
    mainexit.write(str(run), {"exit_code": 7, "signal": None})
    assert mainexit.read(str(run)) == mainexit.MainExit(7, None, False, mainexit.read(str(run)).finished_at)  # type: ignore[union-attr]
    record = run / mainexit.NAME
    for bad in ('{"exit_code": 300}', '{"exit_code": "3"}', '{"exit_code": true}', "[3]", "not json",
                '{"exit_code": 1, "signal": 999}', '{"exit_code": 1, "pad": "' + "x" * 5000 + '"}'):  # fmt: skip
        record.write_text(bad)
        assert mainexit.read(str(run)) is None, bad
    record.unlink()
    os.symlink("/etc/hostname", record)  # never followed
    assert mainexit.read(str(run)) is None
    record.unlink()
    os.mkfifo(record)  # never blocks
    assert mainexit.read(str(run)) is None


# --- files across restarts -----------------------------------------------------------------
async def test_files_persist_across_restart_except_tmp(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=False))
    write = await box.exec("sh", ["-c", "echo kept > /root/kept; echo gone > /tmp/gone"], stdin=False)
    assert (await write.wait()).exit_code == 0
    await box.stop()
    await box.start()
    check = await box.exec("sh", ["-c", "cat /root/kept; ls /tmp"], stdin=False)
    assert await check.stdout().read() == "kept\n"  # /tmp is a tmpfs, as in BoxLite (README)
    await runtime.remove(box.id, force=True)


# --- the default image ----------------------------------------------------------------------
@pytest.fixture
def offline_default_image(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The home's Debian package cache holds the default image's .debs already (as after a first
    online run), and downloading is refused: building the default image must need no network."""
    python_rootfs()  # the test cache of the same packages
    debs = home / "images" / "debian" / "debs"
    debs.mkdir(parents=True)
    for deb in (CACHE / "debs").glob("*.deb"):
        os.link(deb, debs / deb.name)
    from boxlite.images import debian

    real_run = debian._run

    def no_download(cmd: list[str], cwd: Path | None = None) -> str:
        assert cmd[:2] != ["apt-get", "download"], "the default image needed the network"
        return real_run(cmd, cwd)

    monkeypatch.setattr(debian, "_run", no_download)


async def test_simplebox_and_codebox_without_image_use_the_default_image(
    runtime: boxlite.Boxlite, offline_default_image: None
) -> None:
    async with boxlite.SimpleBox(runtime=runtime) as box:
        result = await box.exec("python3", "-c", "print(1)")
        assert (result.exit_code, result.stdout) == (0, "1\n")
        assert box.info().image == "debian-python (default)"
    code = boxlite.CodeBox(runtime=runtime)
    async with code:
        assert await code.run("print(6 * 7)") == "42\n"
    assert await runtime.list_info() == []


# --- failed start ---------------------------------------------------------------------------
async def test_failed_start_of_an_auto_remove_box_leaves_nothing(
    runtime: boxlite.Boxlite, busybox_rootfs: Path
) -> None:
    doomed = await runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), ready_timeout=0.001))
    with pytest.raises(boxlite.BoxliteError):
        await doomed.start()
    assert await runtime.list_info() == []
    assert not runtime.home.box_dir(doomed.id).exists()
    with pytest.raises(boxlite.BoxliteError):  # SimpleBox's default is auto_remove=True
        async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime, ready_timeout=0.001):
            pass
    assert await runtime.list_info() == []
    assert [p for p in (runtime.home.root / "boxes").iterdir()] == []


async def test_failed_start_of_a_kept_box_keeps_it(runtime: boxlite.Boxlite, tmp_path: Path) -> None:
    rootfs = build_busybox_rootfs(tmp_path / "rootfs")  # its own: the layer may be the directory itself
    kept = await runtime.create(boxlite.BoxOptions(rootfs_path=str(rootfs), auto_remove=False))
    shutil.rmtree(Path(runtime._core.record(kept.id).layers[0]))  # its image layer is gone: the start fails
    with pytest.raises(boxlite.EngineError, match="missing"):
        await kept.start()
    assert [i.id for i in await runtime.list_info()] == [kept.id]
    await runtime.remove(kept.id)


# --- exec failures --------------------------------------------------------------------------
async def test_bad_working_directory_is_126(box: boxlite.SimpleBox) -> None:
    with pytest.raises(boxlite.ExecError, match="working directory") as err:
        await box.exec("true", cwd="/no/such/dir")
    assert err.value.exit_code == 126
    with pytest.raises(boxlite.ExecError) as err:
        await box.exec("true", cwd="/etc/passwd")  # not a directory
    assert err.value.exit_code == 126
    with pytest.raises(boxlite.ExecError) as err:
        await box.exec("no-such-cmd")
    assert err.value.exit_code == 127


async def test_oom_kill_is_reported(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime, memory_mib=48) as box:
        # `tail` keeps the current line in memory and /dev/zero has no newline: it grows at the
        # speed of read() (a shell building a string is too slow under TCG to reach the limit)
        hog = await box.exec("tail", "/dev/zero", timeout=120)
        assert (hog.exit_code, hog.error_message) == (137, "killed: out of memory (limit 48 MiB)")
        execution = await box.box.exec("sh", ["-c", "kill -9 $$"], stdin=False)
        status = await execution.wait()
        assert (status.exit_code, status.oom_killed) == (137, False)  # a plain SIGKILL is not an OOM kill
        assert status.error_message == "killed by signal 9 (SIGKILL)"


# --- the TCG notice -------------------------------------------------------------------------
class _Artifact:
    manifest: dict[str, Any] = {"files": {"vmlinux": "k"}}


def test_tcg_notice_is_plain_and_once_per_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BOXLITE_VM_ACCEL", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # each home probes: no verdict shared by homes
    monkeypatch.setattr(verdict, "kvm_device_usable", lambda: True)
    monkeypatch.setattr(verdict, "qemu_version", lambda: "q")
    raw = ("KVM probe boot failed: qemu-system-x86_64: ../../target/i386/kvm/kvm.c:2852: kvm_buf_set_msrs: "
           "Assertion `ret == cpu->kvm_msr_buf->nmsrs' failed.")  # fmt: skip
    monkeypatch.setattr(accel, "_probe", lambda artifact: accel.Accel("tcg", raw))
    home_a, home_b = tmp_path / "a" / "cache" / "vm", tmp_path / "b" / "cache" / "vm"
    assert accel.choose(_Artifact(), home_a).name == "tcg"  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert err.strip() == (
        "boxlite: KVM cannot run guests on this host (a test boot of the guest kernel under KVM crashed); "
        f"VM boxes use software emulation, ~{accel.TCG_SLOWDOWN}\u00d7 slower"
    )
    assert "Assertion" not in err
    for _ in range(2):  # another process on the same home (the module state does not matter)
        assert accel.choose(_Artifact(), home_a).name == "tcg"  # type: ignore[arg-type]
    assert capsys.readouterr().err == ""
    accel.choose(_Artifact(), home_b)  # type: ignore[arg-type]
    assert "KVM cannot run guests on this host" in capsys.readouterr().err
    assert json.loads(next(home_a.glob("accel-*.json")).read_text())["reason"] == raw  # details stay in the cache
    accel.choose(_Artifact(), home_a, announce=False)  # type: ignore[arg-type]
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("reason", "short"),
    [
        ("/dev/kvm is not available", "no usable /dev/kvm"),
        ("KVM probe boot showed no sign of life within 4s", "a test boot of the guest kernel under KVM hung"),
        ("KVM probe could not start QEMU: [Errno 2] No such file", "QEMU could not start with KVM"),
    ],
)
def test_tcg_notice_reasons_are_short(reason: str, short: str) -> None:
    assert accel.short_reason(reason) == short


def test_forced_tcg_prints_no_notice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any,
                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setenv("BOXLITE_VM_ACCEL", "tcg")
    with caplog.at_level(logging.INFO, logger="boxlite.vm"):
        assert accel.choose(_Artifact(), tmp_path).name == "tcg"  # type: ignore[arg-type]
    assert capsys.readouterr().err == ""


# --- the VM relay's part --------------------------------------------------------------------
@pytest.mark.parametrize("main", [True, False])
def test_vm_relay_reports_the_main_process_end_after_its_last_output(tmp_path: Path, main: bool) -> None:
    from boxlite.agent import protocol as p
    from boxlite.agent.logfile import SharedLogs
    from boxlite.engines.vm.relay import Client, Relay

    to_guest: list[bytes] = []
    ended: list[bytes] = []
    logs = SharedLogs()
    relay = Relay(to_guest.append, lambda name, limit: logs.open(str(tmp_path / name), limit), ended.append)
    asker = Client(on_frame=lambda *_: None)
    relay.attach(asker)
    body = {"op": "exec", "argv": ["sh"], "detach": True, "log": "main.log", "main": main}
    relay.send(asker, p.REQUEST, 1, json.dumps(body).encode())
    [(_, _, gid)] = [p.HEADER.unpack_from(frame) for frame in to_guest]
    assert json.loads(to_guest[0][p.HEADER_SIZE :])["main"] is main  # the agent ends its output soon after
    exit_body = {"exit_code": 3, "signal": None}
    for frame in (p.encode_json(p.RESPONSE, gid, {"ok": True}), p.encode(p.STDOUT, gid, b"early\n"),
                  p.encode_json(p.EXIT, gid, exit_body), p.encode(p.STDOUT, gid, b"late\n")):  # fmt: skip
        relay.feed_guest(frame)
    assert ended == []  # output may still follow the EXIT frame
    relay.feed_guest(p.encode(p.STDOUT, gid, b"") + p.encode(p.STDERR, gid, b""))
    assert (tmp_path / "main.log").read_bytes() == b"early\nlate\n"
    assert [json.loads(e) for e in ended] == ([exit_body] if main else [])
