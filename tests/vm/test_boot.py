"""VM engine end to end: boot, own kernel, exec over the protocol, persistence, failures, lifeline."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from vmhelpers import Client, make_spec, requires_qemu, shutdown, wait_gone

from boxlite import runtime_artifact
from boxlite.engines.base import RootLayers, process_start_time
from boxlite.engines.vm import VmEngine
from boxlite.engines.vm.disks import ensure_layer_image
from boxlite.errors import EngineError

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.vm, pytest.mark.slow, requires_qemu]


async def test_exec_own_kernel_and_layout(started) -> None:  # type: ignore[no-untyped-def]
    _, spec, _ = started
    assert json.loads((spec.run_dir / "boot.json").read_text())["restored"] is True
    c = await Client.connect(spec.agent_socket)
    hello = await c.request(1, {"op": "hello"})
    assert hello["ok"] and hello["pid"] == 1
    res = await c.exec(["/bin/sh", "-c", "uname -r; hostname; echo err >&2; exit 3"])
    release, hostname = res.stdout.decode().split()
    assert release.endswith("-boxlite") and release != os.uname().release
    assert hostname == spec.hostname
    assert (res.exit_code, res.stderr) == (3, b"err\n")
    res = await c.exec(["/bin/cat"], stdin=b"piped input")
    assert res.stdout == b"piped input"
    res = await c.exec(["/bin/sh", "-c", "readlink /dev/ptmx; ls /dev/pts; grep -c ' /tmp tmpfs' /proc/mounts"])
    assert res.stdout.decode().split() == ["pts/ptmx", "ptmx", "1"]
    await c.close()


async def test_many_clients_share_one_guest_stream(started) -> None:  # type: ignore[no-untyped-def]
    _, spec, _ = started
    clients = [await Client.connect(spec.agent_socket) for _ in range(3)]
    # every client uses channel 1 at the same time; outputs must not cross
    results = await asyncio.gather(
        *(c.exec(["/bin/sh", "-c", f"sleep 0.2; echo client{i}"], channel=1) for i, c in enumerate(clients))
    )
    assert [r.stdout for r in results] == [f"client{i}\n".encode() for i in range(3)]
    for c in clients:
        await c.close()


async def test_writes_persist_across_restart(artifact, vm_home: Path, busybox_rootfs: Path) -> None:  # type: ignore[no-untyped-def]
    engine = VmEngine()
    spec = make_spec(vm_home, busybox_rootfs, "persist", vm_snapshot=False)
    running = await engine.start(spec)  # a cold boot ...
    assert json.loads((spec.run_dir / "boot.json").read_text())["restored"] is False
    c = await Client.connect(spec.agent_socket)
    res = await c.exec(["/bin/sh", "-c", "echo kept > /root/state; rm /bin/true; sync"])
    assert res.exit_code == 0
    await c.close()
    await shutdown(spec, running, engine)
    assert process_start_time(running.pid) is None

    spec.vm_snapshot = True
    running = await engine.start(spec)  # ... then a snapshot restore sees the same disk
    assert json.loads((spec.run_dir / "boot.json").read_text())["restored"] is True
    c = await Client.connect(spec.agent_socket)
    res = await c.exec(["/bin/sh", "-c", "cat /root/state; test -e /bin/true || echo gone"])
    assert res.stdout == b"kept\ngone\n"
    await c.close()
    metrics = engine.metrics(spec, running)
    assert metrics["memory_bytes"] > 0 and metrics["boot_start_to_ready_s"] > 0
    assert metrics["pids"] >= 1 and metrics["cpu_usage_ns"] > 0
    assert engine.metrics(spec, None)["memory_bytes"] > 0  # the runtime may not pass running
    await shutdown(spec, running, engine)


async def test_restored_boxes_get_their_own_clock_and_randomness(  # type: ignore[no-untyped-def]
    artifact, vm_home: Path, busybox_rootfs: Path
) -> None:
    engine = VmEngine()
    outputs = []
    for name in ("r1", "r2"):
        spec = make_spec(vm_home, busybox_rootfs, name)
        running = await engine.start(spec)
        c = await Client.connect(spec.agent_socket)
        res = await c.exec(["/bin/sh", "-c", "date +%s; head -c 16 /dev/urandom | od -An -tx1; hostname"])
        outputs.append(res.stdout.decode().split("\n"))
        await c.close()
        await shutdown(spec, running, engine)
    (t1, rand1, host1, _), (t2, rand2, host2, _) = outputs
    assert abs(int(t1) - time.time()) < 60 and abs(int(t2) - time.time()) < 60
    assert rand1 != rand2
    assert (host1, host2) == ("r1", "r2")


def _broken_artifact(artifact: runtime_artifact.RuntimeArtifact, dest: Path) -> Path:
    """A copy of the artifact whose /init prints a marker and exits (the kernel panics)."""
    sys.path.insert(0, str(REPO / "runtime"))
    try:
        from cpio import Entry, write_cpio  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    dest.mkdir()
    shutil.copy(artifact.kernel, dest / "vmlinux")
    init = b"#!/usr/bin/python3.11 -IS\nprint('boxlite-test: this init gives up')\n"
    with open(artifact.initramfs, "rb") as src, open(dest / "initramfs.cpio", "wb") as out:
        shutil.copyfileobj(src, out)
        write_cpio(out, [Entry("init", stat.S_IFREG | 0o755, init)])  # later archive wins
    manifest = dict(artifact.manifest)
    manifest["files"] = {n: runtime_artifact._sha256(dest / n) for n in ("vmlinux", "initramfs.cpio")}
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


async def test_boot_failure_quotes_console(  # type: ignore[no-untyped-def]
    artifact, vm_home: Path, busybox_rootfs: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(runtime_artifact.ENV_VAR, str(_broken_artifact(artifact, tmp_path / "broken")))
    spec = make_spec(vm_home, busybox_rootfs, "broken", ready_timeout=30)
    with pytest.raises(EngineError) as info:
        await VmEngine().start(spec)
    msg = str(info.value)
    assert "boxlite-test: this init gives up" in msg
    assert "Kernel panic" in msg or "exited" in msg
    assert not spec.agent_socket.exists()


async def test_ready_timeout_kills_everything(artifact, vm_home: Path, busybox_rootfs: Path) -> None:  # type: ignore[no-untyped-def]
    # a cold boot (no snapshot restore) takes seconds: far beyond this readiness timeout
    spec = make_spec(vm_home, busybox_rootfs, "slow", ready_timeout=0.5, vm_snapshot=False)
    with pytest.raises(EngineError, match="not ready within"):
        await VmEngine().start(spec)
    qemu_pid = int((spec.run_dir / "qemu.pid").read_text())
    for _ in range(100):
        if process_start_time(qemu_pid) is None:
            break
        await asyncio.sleep(0.05)
    assert process_start_time(qemu_pid) is None


HOST_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, os, sys
    sys.path[:0] = {paths!r}
    from pathlib import Path
    from boxlite.engines.vm import VmEngine
    from vmhelpers import make_spec

    async def main():
        r, w = os.pipe()  # the lifeline: the runtime holds the write end
        spec = make_spec(Path({home!r}), Path({rootfs!r}), "lifeline", detach=False, lifeline_fd=r)
        running = await VmEngine().start(spec)
        qemu = int((spec.run_dir / "qemu.pid").read_text())
        print(json.dumps({{"shim": running.pid, "qemu": qemu}}), flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_kill9_of_host_process_leaves_no_qemu(artifact, vm_home: Path, busybox_rootfs: Path) -> None:  # type: ignore[no-untyped-def]
    script = HOST_SCRIPT.format(
        paths=[str(REPO / "src"), str(REPO / "tests" / "vm")], home=str(vm_home), rootfs=str(busybox_rootfs)
    )
    host = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert host.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(host.stdout.readline), 90)
        pids = json.loads(line)
        starts = {k: process_start_time(v) for k, v in pids.items()}
        assert all(starts.values())
    finally:
        host.send_signal(signal.SIGKILL)
        host.wait()
    for _ in range(400):  # graceful shutdown through the agent, else QMP quit / SIGKILL
        if all(process_start_time(pids[k]) != starts[k] for k in pids):
            break
        await asyncio.sleep(0.05)
    assert process_start_time(pids["qemu"]) != starts["qemu"], "qemu survived its host process"
    assert process_start_time(pids["shim"]) != starts["shim"], "the shim survived its host process"
    log = (vm_home / "boxes/lifeline/run/shim.log").read_text()
    assert "lifeline closed" in log


async def test_kill_forces_the_box_down(started) -> None:  # type: ignore[no-untyped-def]
    engine, spec, running = started
    qemu = int((spec.run_dir / "qemu.pid").read_text())
    await engine.kill(spec, running)
    assert not running.is_alive()
    assert process_start_time(qemu) is None


def _layered_rootfs(base: Path, busybox: Path, uid_base: int = 0) -> tuple[Path, Path]:
    """Two layers as the store keeps them (image ownership; shifted by ``uid_base`` as an older
    store did): the top one deletes a file (whiteout), makes a dir opaque, and adds a file owned
    by box uid 1000."""
    low, top = base / "low", base / "top"
    shutil.copytree(busybox, low, symlinks=True)
    (low / "etc/gone").write_text("deleted by the top layer\n")
    (low / "opaque").mkdir()
    (low / "opaque/hidden").write_text("hidden by the opaque top dir\n")
    (top / "etc").mkdir(parents=True)
    os.mknod(top / "etc/gone", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    (top / "opaque").mkdir()
    os.setxattr(top / "opaque", "trusted.overlay.opaque", b"y")
    (top / "opaque/visible").write_text("top\n")
    (top / "home").mkdir()
    (top / "home/owned").write_text("mine\n")
    os.chown(top / "home/owned", 1000, 1000)
    for layer in (low, top) if uid_base else ():
        for root, dirs, files in os.walk(layer):
            links = [n for n in dirs if os.path.islink(os.path.join(root, n))]  # real dirs: once, as root
            for name in [root, *(os.path.join(root, n) for n in links + files)]:
                st = os.lstat(name)
                os.chown(name, st.st_uid + uid_base, st.st_gid + uid_base, follow_symlinks=False)
    return low, top


@pytest.mark.parametrize("uid_base", [0, 100000])
def test_layer_disk_holds_image_ownership(tmp_path: Path, busybox_rootfs: Path, uid_base: int) -> None:
    """The VM's layer disk is built from the store's layers as they are (no copy): image ids
    stay; layers of an older store, shifted by ``uid_base``, are read back through an id-mapped
    bind. Whiteouts and overlay xattrs survive."""
    low, top = _layered_rootfs(tmp_path / "layers", busybox_rootfs, uid_base)
    root = RootLayers((low, top), "layered-test", 100000, shifted=bool(uid_base))
    image = ensure_layer_image(tmp_path / "cache", root)

    def debugfs(request: str) -> str:
        res = subprocess.run(["debugfs", "-R", request, str(image)], capture_output=True, text=True, check=True)
        return res.stdout

    def owner(path: str) -> tuple[int, int]:
        found = re.search(r"User:\s+(\d+)\s+Group:\s+(\d+)", debugfs(f"stat {path}"))
        assert found, path
        return int(found[1]), int(found[2])

    assert owner("/1/home/owned") == (1000, 1000)
    assert owner("/0/bin/busybox") == owner("/0/etc") == owner("/1/opaque") == (0, 0)
    assert "character special" in debugfs("stat /1/etc/gone")
    assert 'trusted.overlay.opaque (1) = "y"' in debugfs("ea_list /1/opaque")
    assert os.lstat(low / "bin/busybox").st_uid == uid_base  # the store's layer is untouched


async def test_layers_whiteouts_ownership_and_limits(  # type: ignore[no-untyped-def]
    artifact, vm_home: Path, busybox_rootfs: Path, tmp_path: Path
) -> None:
    low, top = _layered_rootfs(tmp_path / "layers", busybox_rootfs)
    spec = make_spec(vm_home, busybox_rootfs, "layered", cpus=1, memory_mib=128, pids_limit=8)
    spec.root = RootLayers((low, top), "layered-test", 100000)
    engine = VmEngine()
    running = await engine.start(spec)
    try:
        c = await Client.connect(spec.agent_socket)
        script = (
            "test -e /etc/gone || echo gone; ls /opaque; stat -c %u:%g /home/owned /bin/busybox; "
            "nproc; awk '/MemTotal/ {print ($2 < 262144)}' /proc/meminfo; cat /proc/self/cgroup"
        )
        res = await c.exec(["/bin/sh", "-c", script])
        assert res.stdout.decode().split() == ["gone", "visible", "1000:1000", "0:0", "1", "1", "0::/box"], res
        bomb = await c.exec(["/bin/sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 2 & done; wait"], channel=2)
        assert b"fork" in bomb.stderr.lower(), bomb  # pids_limit=8 holds in the guest
        hog = await c.exec(["/bin/dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1"], channel=3)
        assert hog.exit_code == 137, hog  # memory_mib=128: the box cgroup's OOM kill, not the VM's
        assert (await c.exec(["/bin/echo", "alive"], channel=4)).stdout == b"alive\n"
        await c.close()
    finally:
        await shutdown(spec, running, engine)


async def test_kill_after_graceful_shutdown_returns_at_once(started) -> None:  # type: ignore[no-untyped-def]
    engine, spec, running = started
    c = await Client.connect(spec.agent_socket)
    assert (await c.request(1, {"op": "shutdown"}))["ok"]
    await c.close()
    assert await wait_gone(running, 20)
    t = time.monotonic()
    await engine.kill(spec, running)  # what the runtime does after every stop
    assert time.monotonic() - t < 1.0
