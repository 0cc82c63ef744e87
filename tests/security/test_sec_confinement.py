"""Issue 18, items 3, 6, 10 and the host processes' confinement: each test reproduces what a
hostile box root (or image) did and checks that it now fails, on every engine in
BOXLITE_TEST_ENGINES where it applies."""

from __future__ import annotations

import asyncio
import errno
import os
import select
import shutil
import stat
import subprocess
import threading
from pathlib import Path

import pytest

import boxlite
from boxlite.engines.vm import landlock
from boxlite.engines.vm.console import HEAD_BYTES, MAX_BYTES, ConsoleLog
from boxlite.engines.vm.qemu import VmConfig

PROBE_C = r"""
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long r = -1;
    if (argc >= 2 && !strcmp(argv[1], "io_uring")) {
        char params[120] = {0};  /* struct io_uring_params */
        r = syscall(425, 4, params);
    } else if (argc >= 3 && !strcmp(argv[1], "creat")) {
        r = open(argv[2], O_CREAT | O_WRONLY, 04755);
    } else if (argc >= 3 && !strcmp(argv[1], "setcap")) {
        /* vfs_cap_data v2: cap_setuid (7) permitted + effective */
        unsigned int cap[5] = {0x02000001, 1u << 7, 0, 0, 0};
        r = setxattr(argv[2], "security.capability", cap, sizeof cap, 0);
    } else if (argc >= 2 && !strcmp(argv[1], "madvise_mergeable")) {
        void *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        r = madvise(page, 4096, 12);  /* MADV_MERGEABLE */
    } else if (argc >= 2 && !strcmp(argv[1], "madvise_dontneed")) {
        void *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        r = madvise(page, 4096, MADV_DONTNEED);
    } else if (argc >= 2 && !strcmp(argv[1], "prctl_merge")) {
        r = prctl(67, 1, 0, 0, 0);  /* PR_SET_MEMORY_MERGE */
    } else if (argc >= 2 && !strcmp(argv[1], "prctl_name")) {
        r = prctl(PR_SET_NAME, "probe", 0, 0, 0);
    } else if (argc >= 3 && !strcmp(argv[1], "openat2")) {
        unsigned long long how[3] = {O_RDONLY, 0, 0};
        r = syscall(437, AT_FDCWD, argv[2], how, sizeof how);
    }
    printf("errno=%d\n", r >= 0 ? 0 : errno);
    return 0;
}
"""


@pytest.fixture(scope="session")
def probe_rootfs(busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The busybox root filesystem plus /probe, a static binary making the system calls busybox
    cannot (io_uring_setup, open with a setuid mode, openat2)."""
    work = tmp_path_factory.mktemp("probe")
    (work / "probe.c").write_text(PROBE_C)
    subprocess.run(["gcc", "-static", "-O", "-o", str(work / "probe"), str(work / "probe.c")], check=True)
    root = work / "rootfs"
    shutil.copytree(busybox_rootfs, root, symlinks=True)
    shutil.copy(work / "probe", root / "probe")
    os.chmod(root / "probe", 0o755)
    return root


async def sh(box: boxlite.SimpleBox | boxlite.Box, script: str) -> boxlite.ExecResult:
    if isinstance(box, boxlite.SimpleBox):
        return await box.exec("sh", "-c", script)
    execution = await box.exec("sh", ["-c", script], stdin=False)
    stdout, stderr = await asyncio.gather(execution.stdout().read(), execution.stderr().read())
    status = await execution.wait()
    return boxlite.ExecResult(status.exit_code, stdout, stderr, status.timed_out, status.error_message)


# --- item 3: setuid files through a volume -------------------------------------------------


async def test_box_root_cannot_plant_setuid_files_in_a_volume(
    runtime: boxlite.Boxlite, probe_rootfs: Path, tmp_path: Path, engine: str
) -> None:
    """Box root writes a volume as the host owner (root here). A setuid-root copy of a shell
    planted there would be a root shell for every local host user: no way of setting the bits
    works, the files stay plain, and the volume is mounted nosuid,nodev in the box."""
    shared = tmp_path / "shared"
    shared.mkdir()
    async with boxlite.SimpleBox(
        rootfs_path=str(probe_rootfs), runtime=runtime, volumes=[(str(shared), "/data")]
    ) as box:
        attacks = (
            "cp /bin/busybox /data/sh; chmod 4755 /data/sh; echo chmod=$?;"
            " chmod u+s,g+s /data/sh; echo chmod_symbolic=$?;"
            " install -m 6755 /bin/busybox /data/inst; echo install=$?;"
            " mkdir /data/d && chmod 2775 /data/d; echo setgid_dir=$?;"
            " /probe creat /data/created; /probe setcap /data/sh"
        )
        result = await sh(box, attacks)
        assert "chmod=1" in result.stdout and "chmod_symbolic=1" in result.stdout, result
        assert "install=0" not in result.stdout and "setgid_dir=1" in result.stdout, result
        assert result.stdout.count("errno=") == 2 and "errno=0" not in result.stdout, result  # open(O_CREAT, 04755)
        assert f"errno={errno.EPERM}\n" in result.stdout, result  # and file capabilities
        mounts = (await box.exec("cat", "/proc/self/mountinfo")).stdout
        data = next(line for line in mounts.splitlines() if line.split()[4] == "/data")
        assert {"nosuid", "nodev"} <= set(data.split()[5].split(",")), data
        assert (await sh(box, "chmod 755 /data/sh && echo ok")).stdout == "ok\n"  # plain modes still work
        if engine == "vm":  # virtiofsd's worker (a child in its namespace sandbox) serves the guest
            workers = [pid for pid in _processes_serving(shared) if "Seccomp:\t2" in _status(pid)]
            assert len(workers) == 1, "no virtiofsd under its seccomp filter"
            cap_eff = int(_status(workers[0]).split("CapEff:")[1].split()[0], 16)
            assert not cap_eff & (1 << 27), "virtiofsd kept CAP_MKNOD"  # a guest root could make host device nodes
    planted = [p for p in shared.rglob("*") if p.lstat().st_mode & (stat.S_ISUID | stat.S_ISGID)]
    assert planted == [], [oct(p.lstat().st_mode) for p in planted]
    assert "security.capability" not in os.listxattr(shared / "sh")
    assert (shared / "sh").exists() and (shared / "sh").stat().st_uid == os.getuid()


def _processes_serving(path: Path) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if f"source={path}".encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            pass
    return found


def _status(pid: int) -> str:
    return Path(f"/proc/{pid}/status").read_text()


# --- item 6: device nodes in the box's filesystem, the console ----------------------------

NODES = {"zdev": (1, 5), "ttyS0": (4, 64), "console": (5, 1)}  # /dev/zero, the serial console


async def test_device_nodes_in_the_box_filesystem_are_inert(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, engine: str
) -> None:
    """Device nodes in the box's own layer (put there from the host, as an image or a guest
    root could) cannot be opened: the root overlay is nodev. In a VM a console node let box
    root write the host's console.log without end; it stays small now. And box root cannot make
    device nodes."""
    box = await runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), auto_remove=False))
    await box.start()
    await box.stop()
    box_dir = runtime.home.box_dir(box.id)
    if engine == "vm":  # the box disk holds the writable layer in /upper
        script = box_dir / "debugfs.cmds"
        lines = ["cd /upper"]
        for name, (major, minor) in NODES.items():
            lines += [f"mknod {name} c {major} {minor}", f"sif {name} mode 020666"]
        script.write_text("\n".join(lines) + "\n")
        subprocess.run(["debugfs", "-w", "-f", str(script), str(box_dir / "vm" / "disk.ext4")], check=True)
    else:
        for name, (major, minor) in NODES.items():
            os.mknod(box_dir / "upper" / name, stat.S_IFCHR | 0o666, os.makedev(major, minor))
    await box.start()
    try:
        seen = await sh(box, "ls -l /zdev /ttyS0 /console")
        assert seen.exit_code == 0 and seen.stdout.count("\nc") + seen.stdout.startswith("c") == 3, seen
        read = await sh(box, "head -c 4 /zdev | od -An -tx1; echo status=$?")
        assert "00 00 00 00" not in read.stdout and "ermission denied" in read.stderr, read
        flood = await sh(box, "for i in 1 2 3; do yes BOXLITE-FLOOD | head -c 4000000 > /ttyS0; done;"
                              " yes BOXLITE-FLOOD | head -c 4000000 > /console; echo done")  # fmt: skip
        assert flood.stdout == "done\n" and "ermission denied" in flood.stderr, flood
        # Box root holds CAP_MKNOD (Docker's default): in the VM's guest it makes the node, which
        # stays inert (nodev); the namespace engine's user namespace cannot make one at all.
        made = await sh(box, "mknod /tmp/null2 c 1 3 && echo made; head -c1 /tmp/null2; mknod /tmp/fifo p && echo fifo")
        assert made.stdout == ("made\nfifo\n" if engine == "vm" else "fifo\n"), made  # pipes are fine
        assert engine != "vm" or "ermission denied" in made.stderr, made
    finally:
        await box.stop()
    if engine == "vm":
        console = box_dir / "console.log"
        assert b"BOXLITE-FLOOD" not in console.read_bytes()
        assert console.stat().st_size < 256 * 1024


def test_console_log_keeps_its_head_and_latest_output_within_the_cap(tmp_path: Path) -> None:
    """What the shim and the relay do with QEMU's console pipe: a guest writing its console
    without end (here 40 MiB) leaves at most MAX_BYTES on the host, with the boot messages at
    the start and the latest output at the end."""
    path = tmp_path / "console.log"
    log = ConsoleLog(str(path))
    r, w = os.pipe()
    os.set_blocking(r, False)
    boot = b"boxlite-init: ready 1.0\n" * (HEAD_BYTES // 24 + 10)

    def guest() -> None:
        with os.fdopen(w, "wb") as out:
            out.write(boot)
            for i in range(40 * 1024):
                out.write(b"%07d" % i + b"x" * 1017)
            out.write(b"THE-LAST-LINE\n")

    writer = threading.Thread(target=guest)
    writer.start()
    largest = 0
    while True:
        select.select([r], [], [], 5)
        alive = log.pump(r)
        largest = max(largest, path.stat().st_size)
        if not alive:
            break
    writer.join()
    log.close()
    os.close(r)
    data = path.read_bytes()
    assert largest <= MAX_BYTES
    assert data.startswith(boot[:HEAD_BYTES])
    assert data.endswith(b"THE-LAST-LINE\n")
    assert b"console output cut here" in data


# --- item 10 ---------------------------------------------------------------------------------


async def test_io_uring_and_openat2_are_not_available(runtime: boxlite.Boxlite, probe_rootfs: Path) -> None:
    """io_uring's operations would bypass the seccomp filter (and its kernel code is a frequent
    source of escalations): ENOSYS, so that runtimes fall back to plain system calls."""
    async with boxlite.SimpleBox(rootfs_path=str(probe_rootfs), runtime=runtime) as box:
        assert (await box.exec("/probe", "io_uring")).stdout == f"errno={errno.ENOSYS}\n"
        assert (await box.exec("/probe", "openat2", "/etc/passwd")).stdout == f"errno={errno.ENOSYS}\n"
        assert (await box.exec("/probe", "creat", "/tmp/x")).stdout == f"errno={errno.EPERM}\n"
        assert (await sh(box, "ls /tmp/x 2>&1")).exit_code != 0


async def test_box_memory_is_never_offered_to_ksm(runtime: boxlite.Boxlite, probe_rootfs: Path) -> None:
    """On a host running KSM, memory a box made mergeable could be merged with another tenant's
    and probed by write timing: both ways of asking are refused; the same calls' other uses work."""
    async with boxlite.SimpleBox(rootfs_path=str(probe_rootfs), runtime=runtime) as box:
        assert (await box.exec("/probe", "madvise_mergeable")).stdout == f"errno={errno.EPERM}\n"
        assert (await box.exec("/probe", "prctl_merge")).stdout == f"errno={errno.EPERM}\n"
        assert (await box.exec("/probe", "madvise_dontneed")).stdout == "errno=0\n"
        assert (await box.exec("/probe", "prctl_name")).stdout == "errno=0\n"


async def test_box_root_cannot_kill_the_agent_with_signals(box: boxlite.SimpleBox) -> None:
    """The agent is PID 1 of the box's pid namespace: SIGINT (which Python turned into
    KeyboardInterrupt), SIGTERM, SIGHUP, SIGQUIT from box root do nothing."""
    result = await sh(box, "for s in INT TERM HUP QUIT USR1; do kill -$s 1; echo $?; done; sleep 0.3; echo alive")
    assert result.stdout.endswith("alive\n"), result
    again = await box.exec("echo", "still-serving")
    assert again.stdout == "still-serving\n"


async def test_proc_shows_no_host_paths(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    """/proc/1/cmdline named the host's agent code directory; mountinfo named the box's host
    directory (overlay upperdir, resolv.conf) and the agent's own mounts."""
    home = str(runtime.home.root)
    source = str(Path(boxlite.__file__).resolve().parent)
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime, network="enabled") as box:
        files = "/proc/1/cmdline /proc/self/mountinfo /proc/1/mountinfo /proc/1/mounts /proc/1/mountstats"
        result = await sh(box, f"for f in {files}; do echo == $f; cat $f 2>/dev/null | tr '\\0' ' '; echo; done")
        assert "/etc/resolv.conf" in result.stdout  # the bind is there, its source is neutral
        for host_path in (home, source, str(busybox_rootfs)):
            assert host_path not in result.stdout, (host_path, result.stdout)


async def test_box_root_cannot_retune_the_kernel(box: boxlite.SimpleBox) -> None:
    """In a VM box root owned the guest's /proc/sys files (~600 writable, e.g. kernel.printk,
    which made the guest kernel flood its console); now read-only, as in namespace boxes."""
    script = (
        "before=$(cat /proc/sys/kernel/printk); echo 8 > /proc/sys/kernel/printk; echo printk=$?;"
        " echo 1 > /proc/sys/net/ipv4/ip_forward; echo forward=$?;"
        ' [ "$(cat /proc/sys/kernel/printk)" = "$before" ] && echo unchanged'
    )
    result = await sh(box, script)
    assert result.stdout == "printk=1\nforward=1\nunchanged\n", result


@pytest.mark.parametrize("name", [".", "..", "a\0b", "line\nbreak", "esc\x1b[31m", "tab\t", "del\x7f"])
async def test_dot_and_control_character_names_are_rejected(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, name: str
) -> None:
    with pytest.raises(boxlite.ConfigError, match="invalid box name"):
        await runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs)), name=name)


async def test_default_memory_limit_and_tmpfs_sizes(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    """A box created without memory_mib gets 512 MiB (BoxLite's default), and its /tmp,
    /dev/shm and /run are sized from it (256, 128 and 32 MiB) instead of half the host's RAM each."""
    assert boxlite.BoxOptions().memory_mib == 512
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime) as box:
        assert box.info().memory_mib == 512
        df = await sh(box, "df -k /tmp /dev/shm /run | tail -n +2 | awk '{print $6, $2}'")
        assert df.stdout.split("\n")[:3] == ["/tmp 262144", "/dev/shm 131072", "/run 32768"], df
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime, memory_mib=64) as small:
        df = await sh(small, "df -k /tmp | tail -n 1 | awk '{print $2}'")
        assert df.stdout == "32768\n"


# --- host processes: QEMU ------------------------------------------------------------------


async def test_qemu_runs_with_its_seccomp_sandbox_and_no_capabilities(home: Path, busybox_rootfs: Path) -> None:
    """QEMU exists for VM boxes only: this test always runs on the VM engine."""
    runtime = boxlite.Boxlite(boxlite.Options(home_dir=str(home), engine="vm"))
    try:
        await _qemu_and_relay_are_confined(runtime, busybox_rootfs)
    finally:
        await runtime.shutdown(timeout=2)


async def _qemu_and_relay_are_confined(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    async with boxlite.SimpleBox(rootfs_path=str(busybox_rootfs), runtime=runtime) as box:
        pid = int((runtime.home.box_dir(box.id) / "run" / "qemu.pid").read_text())
        status = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        assert status["Seccomp"] == "2"  # -sandbox on
        # uid 0 (its files are root's; -runas would cut its tie to the shim), but no capability
        assert status["Uid"].split() == ["0"] * 4
        assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == int(status["CapBnd"], 16) == 0
        assert status["NoNewPrivs"] == "1"
        # the relay (the shim after the guest answered), which parses what the guest sends: no capability either
        relay = int((runtime.home.box_dir(box.id) / "run" / "shim.pid").read_text().split()[0])
        relay_status = dict(line.split(":\t", 1) for line in Path(f"/proc/{relay}/status").read_text().splitlines())
        assert int(relay_status["CapEff"], 16) == int(relay_status["CapBnd"], 16) == 0
        assert relay_status["NoNewPrivs"] == "1"
        assert "-sandbox" in Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        assert (await box.exec("echo", "ok")).stdout == "ok\n"


def test_qemu_may_write_only_its_own_files(tmp_path: Path) -> None:
    """QEMU runs as uid 0 (no capabilities), which still owns every root-owned host file; its
    Landlock ruleset (applied in its preexec) leaves it its own VM's files only."""
    box = tmp_path / "box"
    box.mkdir()
    disk, kernel = box / "disk.ext4", tmp_path / "vmlinux"
    disk.write_bytes(b"")
    kernel.write_bytes(b"kernel")
    host_file = tmp_path / "host-file"
    host_file.write_text("host\n")
    cfg = VmConfig(kernel=str(kernel), initramfs=str(kernel), console=str(box / "console.log"), upper_disk=str(disk))
    rules = landlock.ruleset(landlock.qemu_rules(cfg, str(box)))
    assert rules is not None, "this kernel has Landlock"
    script = (
        f"echo x >> {disk} && echo disk-written; cat {kernel}; echo;"
        f" echo x >> {host_file} || echo write-denied; cat {host_file} || echo read-denied;"
        " cat /etc/hostname || echo etc-denied; touch /etc/boxlite-landlock-probe || echo create-denied"
    )
    result = subprocess.run(
        ["/bin/sh", "-c", script], preexec_fn=lambda: landlock.restrict_self(rules), capture_output=True, text=True
    )
    os.close(rules)
    assert result.stdout.split() == [
        "disk-written",
        "kernel",
        "write-denied",
        "read-denied",
        "etc-denied",
        "create-denied",
    ]
    assert host_file.read_text() == "host\n" and not Path("/etc/boxlite-landlock-probe").exists()
