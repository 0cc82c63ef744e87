"""Isolation seen from inside a box: what a (hostile) box root can and cannot reach.

Every check runs a real command in a real box and asserts what the box sees.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import socket
from pathlib import Path

import pytest

import boxlite
from support.boxnc import nc

pytestmark = pytest.mark.namespace_only

SECRET = "host-secret-7f3a9c"
NS_GET_USERNS = 0xB701  # ioctl(2) on a namespace fd: its owning user namespace


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """A host file the box must never see."""
    path = tmp_path / "host-marker.txt"
    path.write_text(SECRET)
    os.chmod(path, 0o644)
    return path


async def sh(box: boxlite.SimpleBox, script: str, **kw: object) -> boxlite.ExecResult:
    return await box.exec("sh", "-c", script, **kw)  # type: ignore[arg-type]


async def test_host_files_are_not_visible(box: boxlite.SimpleBox, marker: Path) -> None:
    m = str(marker)
    depth = "../" * 12
    attempts = [
        f"cat {m}",
        f"cat {depth}{m.lstrip('/')}",
        f"cd /tmp && cat {depth}{m.lstrip('/')}",
        f"cat /proc/1/root{m}",
        f"cat /proc/self/root{m}",
        f"cat /proc/1/cwd{m}",
        f"ln -s /proc/1/root /tmp/escape && cat /tmp/escape{m}",
        f"ln -s {m} /tmp/lnk && cat /tmp/lnk",
        f"cat /proc/*/root{m}",
        f"find / -name {marker.name} -xdev 2>/dev/null | xargs -r cat",
    ]
    for script in attempts:
        result = await sh(box, script + " 2>&1")
        assert SECRET not in result.stdout, script
    # The host's own root directory is not the box's: the marker's parent does not exist.
    assert (await sh(box, f"test -e {marker.parent}")).exit_code != 0


async def test_proc_1_root_is_not_a_way_out(box: boxlite.SimpleBox) -> None:
    """PID 1 (the agent) still sees a supervisor root; the box cannot enter it."""
    result = await sh(box, "ls /proc/1/root/ 2>&1; readlink /proc/1/root 2>&1; ls /proc/1/fd 2>&1")
    assert "Permission denied" in result.stdout
    assert "usr" not in result.stdout.split()


async def test_cannot_mount(box: boxlite.SimpleBox) -> None:
    result = await sh(box, "mkdir -p /mnt/t && mount -t tmpfs none /mnt/t")
    assert result.exit_code != 0
    again = await sh(box, "mount -o remount,rw / 2>&1; mount --bind /tmp /mnt/t 2>&1; echo $?")
    assert again.stdout.strip().endswith("1") or again.stdout.strip().split()[-1] != "0"
    mounts = await sh(box, "cat /proc/self/mounts")
    assert " /mnt/t " not in mounts.stdout


@pytest.mark.parametrize("flags", ["-U", "-r", "-m", "-n", "-p -f", "-u", "-i"])
async def test_cannot_create_namespaces(box: boxlite.SimpleBox, flags: str) -> None:
    result = await box.exec("busybox", "unshare", *flags.split(), "true")
    assert result.exit_code != 0
    assert "not permitted" in result.stderr or "denied" in result.stderr


async def test_cannot_chroot_or_change_hostname(box: boxlite.SimpleBox) -> None:
    assert (await box.exec("busybox", "chroot", "/", "true")).exit_code != 0
    assert (await box.exec("hostname", "changed")).exit_code != 0
    assert (await box.exec("hostname")).stdout.strip() != "changed"


async def test_hostname_is_the_boxs(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime) as box:
        default = (await box.exec("hostname")).stdout.strip()
        assert default and default != socket.gethostname()
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime, hostname="sandbox-1") as box:
        assert (await box.exec("hostname")).stdout.strip() == "sandbox-1"
        assert (await box.exec("cat", "/proc/sys/kernel/hostname")).stdout.strip() == "sandbox-1"
    assert socket.gethostname() != "sandbox-1"


async def test_pid_namespace_shows_only_box_processes(box: boxlite.SimpleBox) -> None:
    shell = await sh(box, "echo $$")
    assert int(shell.stdout) < 100
    pids = (await sh(box, "ls /proc | grep -E '^[0-9]+$'")).stdout.split()
    assert "1" in pids
    assert len(pids) <= 5, pids  # agent, its spawner, sh, ls, grep
    ps = await box.exec("ps", "-o", "pid,args")
    assert "pytest" not in ps.stdout
    assert str(os.getpid()) not in [line.split()[0] for line in ps.stdout.splitlines()[1:]]
    # The host cannot be signalled: there is no such process in the box.
    assert (await box.exec("kill", "-0", str(os.getpid()))).exit_code != 0 or os.getpid() < 10


async def test_no_host_file_descriptors_leak(box: boxlite.SimpleBox) -> None:
    leaked = os.open("/etc/hostname", os.O_RDONLY)  # inheritable on purpose
    os.set_inheritable(leaked, True)
    try:
        result = await box.exec("ls", "/proc/self/fd")
        assert sorted(result.stdout.split(), key=int) == ["0", "1", "2", "3"]  # 3: ls's own dir fd
        targets = (await box.exec("ls", "-l", "/proc/self/fd")).stdout
        links = dict(re.findall(r" (\d+) -> (.*)", targets))
        assert sorted(links, key=int) == ["0", "1", "2"], targets  # fd 3, ls's own, is gone already
        assert all(link.startswith("pipe:") for link in links.values()), targets
        with_tty = await box.box.exec("ls", ["/proc/self/fd"], tty=True, stdin=False)
        out = await with_tty.stdout().read()
        assert sorted(out.split(), key=int) == ["0", "1", "2", "3"]
        await with_tty.wait()
    finally:
        os.close(leaked)


async def test_disabled_network_is_loopback_only(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime, network="disabled") as box:
        await _assert_loopback_only(box)


async def _assert_loopback_only(box: boxlite.SimpleBox) -> None:
    dev = await box.exec("cat", "/proc/net/dev")
    interfaces = [line.split(":")[0].strip() for line in dev.stdout.splitlines()[2:]]
    assert interfaces == ["lo"]
    routes = await box.exec("cat", "/proc/net/route")
    assert len(routes.stdout.strip().splitlines()) <= 1  # header only: no route anywhere
    # Loopback works inside the box.
    server = await box.box.exec("sh", ["-c", nc("-l -p 8080")], stdin=False)  # exits once the client has closed
    try:
        for _ in range(500):  # until the server listens (port 0x1F90, state 0A)
            table = (await box.exec("cat", "/proc/net/tcp", "/proc/net/tcp6")).stdout
            rows = [f for f in map(str.split, table.splitlines()) if len(f) > 3]
            if any(f[1].endswith(":1F90") and f[3] == "0A" for f in rows):
                break
            await asyncio.sleep(0.01)
        sent = await sh(box, "echo ping | nc -w 2 127.0.0.1 8080")
        assert sent.exit_code == 0, sent
        assert (await asyncio.wait_for(server.stdout().read(), 10)).strip() == "ping"
    finally:
        await server.kill()
        await server.wait()
    # And nothing else is reachable.
    out = await sh(box, "echo x | nc -w 1 1.1.1.1 80 2>&1; echo rc=$?")
    assert "rc=0" not in out.stdout


async def test_capabilities_seccomp_and_no_new_privs(box: boxlite.SimpleBox) -> None:
    """Box root has Docker's default set (0xa80425fb) as bounding, permitted and effective
    sets; another user only the bounding set; nobody inheritable or ambient ones."""
    for user in (None, "user"):
        status = (await box.exec("cat", "/proc/self/status", user=user)).stdout
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        values = {k: v.strip() for k, v in fields.items()}
        held = 0xA80425FB if user is None else 0
        expected = {"CapInh": 0, "CapPrm": held, "CapEff": held, "CapBnd": 0xA80425FB, "CapAmb": 0}
        for cap, value in expected.items():
            assert int(values[cap], 16) == value, (user, cap, values[cap])
        assert values["NoNewPrivs"] == "1"
        assert values["Seccomp"] == "2"


async def test_namespaces_belong_to_the_host_and_cgroups_are_the_boxs(
    box: boxlite.SimpleBox, runtime: boxlite.Boxlite
) -> None:
    """Every namespace but the user one is owned by the host's user namespace (so box root's
    capabilities never apply to it), and the box's cgroup namespace is rooted at its own cgroups."""
    info = await runtime.get_info(box.id)
    pid = info.state.pid if info else None
    assert pid
    host_user = os.stat("/proc/self/ns/user").st_ino
    for ns in ("cgroup", "net", "pid", "mnt", "uts", "ipc"):
        fd = os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            owner = fcntl.ioctl(fd, NS_GET_USERNS)
        finally:
            os.close(fd)
        try:
            assert os.fstat(owner).st_ino == host_user, f"{ns} namespace owned by the box's user namespace"
        finally:
            os.close(owner)
    assert os.stat(f"/proc/{pid}/ns/user").st_ino != host_user
    seen = (await box.exec("cat", "/proc/self/cgroup")).stdout.splitlines()
    assert seen and all(line.endswith(":/") for line in seen), seen  # no host cgroup path visible
    on_host = Path(f"/proc/{pid}/cgroup").read_text()
    assert f"/boxlite/{box.id}\n" in on_host, on_host


async def test_box_root_is_a_shifted_uid_on_the_host(box: boxlite.SimpleBox, runtime: boxlite.Boxlite) -> None:
    await sh(box, "echo hi > /rootfile")
    await sh(box, "mkdir /home/user/d", user="user")
    assert (await box.exec("id", "-u")).stdout.strip() == "0"
    assert (await box.exec("cat", "/proc/self/uid_map")).stdout.split() == ["0", "100000", "65536"]
    upper = runtime.home.box_dir(box.id) / "upper"
    assert (upper / "rootfile").stat().st_uid == 100000
    assert (upper / "rootfile").stat().st_gid == 100000
    assert (upper / "home" / "user" / "d").stat().st_uid == 101000
    # Copy-up of image files (layers hold the image's ids, mapped into the box): shifted owners.
    await sh(box, "echo x >> /etc/passwd; chmod 0640 /etc/group")
    assert (upper / "home" / "user").stat().st_uid == 101000
    assert [(upper / "etc" / n).stat().st_uid for n in ("passwd", "group")] == [100000, 100000]
    assert (await sh(box, "echo y >> /etc/passwd", user="user")).exit_code != 0
    # The image files too: nothing in the box is owned by host root.
    listing = await sh(box, "ls -ln /bin/busybox /etc/passwd")
    assert all(line.split()[2] == "0" for line in listing.stdout.splitlines())


async def test_box_root_cannot_touch_host_owned_files(box: boxlite.SimpleBox) -> None:
    """Files the box sees as owned by 'nobody' (unmapped host ids) stay read-only to it."""
    result = await sh(box, "echo x > /proc/sys/kernel/hostname 2>&1; echo x > /proc/sysrq-trigger 2>&1; echo done")
    assert "done" in result.stdout
    assert (await box.exec("hostname")).stdout.strip() != "x"
    assert (await sh(box, "echo 1 > /proc/sys/vm/drop_caches")).exit_code != 0


async def test_box_of_an_older_store_keeps_its_shifted_layers(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, home: Path
) -> None:
    """A box created when the store held layers shifted by the uid base (``images/layers``)
    still starts on them as they are: not id-mapped a second time."""
    import shutil

    box = await runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=False))
    core = runtime._core
    rec = core.record(box.id)
    old = home / "images" / "layers" / "oldformat" / "root"
    shutil.copytree(busybox_rootfs, old, symlinks=True)
    for dirpath, dirnames, filenames in os.walk(busybox_rootfs):
        for name in [".", *dirnames, *filenames]:
            st = os.lstat(os.path.join(dirpath, name))
            copy = old / os.path.relpath(os.path.join(dirpath, name), busybox_rootfs)
            os.chown(copy, 100000 + st.st_uid, 100000 + st.st_gid, follow_symlinks=False)
    rec.layers = [str(old)]
    rec.image_id = "rootfs:" + "0" * 64  # an older record: its rootfs directory copied into the store
    core.db.update(rec)
    assert core.spec(rec).root.shifted
    await box.start()
    try:
        run = await box.exec("sh", ["-c", "ls -ln /bin/busybox /home; echo hi > /f"])
        stdout = await run.stdout().read()
        assert (await run.wait()).exit_code == 0
        assert [line.split()[2] for line in stdout.splitlines() if line.startswith("-")] == ["0"]
        assert "1000" in stdout.split()  # /home/user
        assert (home / "boxes" / box.id / "upper" / "f").stat().st_uid == 100000
    finally:
        await box.stop()
        await runtime.remove(box.id)
