"""Issue 10, item 2: box root holds Docker's default capabilities. Each test is an attack a
hostile box root makes with them, and checks it still fails: escaping the box, touching
devices, the host's network or files, and file capabilities that would be valid on the host."""

from __future__ import annotations

import errno
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import boxlite
from boxlite import AdvancedBoxOptions, ContainerCapabilities
from boxlite.errors import ConfigError, UnsupportedOptionError
from boxlite.layout import BoxLayout
from boxlite.runtime import capabilities
from support.capsprobe import build_probe_rootfs, status_caps

CAP_FSETID, CAP_SETFCAP, CAP_SETUID = 1 << 4, 1 << 31, 1 << 7
VFS_CAP_REVISION_2, VFS_CAP_REVISION_3 = 0x02000000, 0x03000000


@pytest.fixture(scope="session")
def probe_rootfs(busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_probe_rootfs(busybox_rootfs, tmp_path_factory.mktemp("capsprobe"))


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every host user can traverse (tmp_path's parents are root's only): a host
    user must be able to reach a planted file for the attack to matter."""
    path = Path(tempfile.mkdtemp(prefix="boxlite-caps-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def sh(box: boxlite.SimpleBox, script: str, user: str | None = None) -> str:
    result = await box.exec("sh", "-c", script, user=user)
    return result.stdout + result.stderr


def _rootid(value: bytes) -> int:
    """The owner a file capability is valid for: v2 has none (host root), v3 stores it."""
    (magic,) = struct.unpack("<I", value[:4])
    if magic & 0xFF000000 == VFS_CAP_REVISION_3:
        return int(struct.unpack("<I", value[20:24])[0])
    return 0


def _host_caps_of(path: Path) -> int:
    """CapPrm of the probe at ``path`` run by an unprivileged host user (nobody), through an fd
    so that the path's parents need not be traversable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        out = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", f"/proc/self/fd/{fd}", "caps"],
            pass_fds=(fd,), capture_output=True, text=True, timeout=10, check=True,
        ).stdout  # fmt: skip
    finally:
        os.close(fd)
    return status_caps(out)["CapPrm"]


# --- file capabilities ---------------------------------------------------------------------


@pytest.mark.namespace_only
async def test_file_capabilities_written_in_a_volume_would_be_host_root_and_are_refused(
    runtime: boxlite.Boxlite, probe_rootfs: Path, open_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writable volume is id-mapped so that box root writes as the host owner. The kernel
    stores a capability box root sets there with host root as its owner, so a host user running
    the file gains it. Shown here with the rule that prevents it lifted; then, with the rule,
    SETFCAP (and FSETID) are not in the set of a box with a writable volume and setcap fails."""
    shared = open_dir / "shared"
    shared.mkdir(mode=0o755)
    attack = "cp /probe /data/p && /probe setcap /data/p"
    with monkeypatch.context() as m:  # the attack, unmitigated
        m.setattr(capabilities, "HOST_PRIVILEGE_ON_VOLUMES", frozenset())
        async with boxlite.SimpleBox(
            rootfs_path=str(probe_rootfs), runtime=runtime, volumes=[(str(shared), "/data")]
        ) as box:
            assert await sh(box, attack) == "setcap=0\n"
        planted = os.getxattr(shared / "p", "security.capability")
        assert _rootid(planted) == 0  # valid for host root...
        assert _host_caps_of(shared / "p") & CAP_SETUID  # ...and a host user gains CAP_SETUID
    (shared / "p").unlink()
    async with boxlite.SimpleBox(
        rootfs_path=str(probe_rootfs), runtime=runtime, volumes=[(str(shared), "/data")]
    ) as box:
        caps = status_caps((await box.exec("cat", "/proc/self/status")).stdout)
        assert caps["CapEff"] == caps["CapBnd"] == capabilities.mask(capabilities.DEFAULT) & ~CAP_SETFCAP & ~CAP_FSETID
        assert await sh(box, attack) == f"setcap={errno.EPERM}\n"
        assert "security.capability" not in os.listxattr(shared / "p")
        assert _host_caps_of(shared / "p") == 0


@pytest.mark.namespace_only
async def test_file_capabilities_in_the_writable_layer_are_not_host_valid(
    runtime: boxlite.Boxlite, probe_rootfs: Path, tmp_path: Path
) -> None:
    """Without a writable volume box root keeps SETFCAP (packages that setcap their binaries
    install; in the box the capability grants nothing: nosuid, no_new_privs). What it writes on
    its own files lands in the overlay's upper dir on the host as a v3 capability owned by the
    box's root uid, which the host's user namespace ignores; a read-only volume cannot be
    written at all."""
    ro = tmp_path / "ro"
    ro.mkdir()
    shutil.copy(probe_rootfs / "probe", ro / "p")
    async with boxlite.SimpleBox(
        rootfs_path=str(probe_rootfs), runtime=runtime, volumes=[(str(ro), "/ro", "ro")]
    ) as box:
        caps = status_caps((await box.exec("cat", "/proc/self/status")).stdout)
        assert caps["CapEff"] & CAP_SETFCAP
        assert await sh(box, "cp /probe /p && /probe setcap /p") == "setcap=0\n"
        assert await sh(box, "/p caps", user="user") == "CapPrm:\t0000000000000000\n"  # nosuid, no_new_privs
        assert await sh(box, "/probe setcap /ro/p") == f"setcap={errno.EROFS}\n"
        uid_base = int((await box.exec("cat", "/proc/self/uid_map")).stdout.split()[1])
        upper = BoxLayout(runtime.home.box_dir(box.id)).upper / "p"
        value = os.getxattr(upper, "security.capability")
        assert _rootid(value) == uid_base != 0
        assert _host_caps_of(upper) == 0
    assert "security.capability" not in os.listxattr(ro / "p")


async def test_setfcap_with_a_writable_volume_is_refused_on_the_namespace_engine(
    runtime: boxlite.Boxlite, busybox_rootfs: Path, tmp_path: Path, engine: str
) -> None:
    """Asking for SETFCAP or FSETID explicitly with a writable volume is a ConfigError there;
    the VM engine's volumes carry no xattrs (virtiofsd ``no_xattr``), so it grants them."""
    for cap in ("SETFCAP", "CAP_FSETID"):
        opts = AdvancedBoxOptions(capabilities=ContainerCapabilities(add=[cap]))
        if engine == "namespace":
            with pytest.raises(ConfigError, match="writable volume"):
                await runtime.create(
                    boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), volumes=[(str(tmp_path), "/d")], advanced=opts)
                )
        else:
            box = await runtime.create(
                boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), volumes=[(str(tmp_path), "/d")], advanced=opts)
            )
            await runtime.remove(box.id, force=True)
        box = await runtime.create(  # read-only: fine on both
            boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), volumes=[(str(tmp_path), "/d", "ro")], advanced=opts)
        )
        await runtime.remove(box.id, force=True)


async def test_file_capabilities_never_reach_volume_files(
    runtime: boxlite.Boxlite, probe_rootfs: Path, open_dir: Path
) -> None:
    shared = open_dir / "shared"
    shared.mkdir(mode=0o755)
    async with boxlite.SimpleBox(
        rootfs_path=str(probe_rootfs), runtime=runtime, volumes=[(str(shared), "/data")]
    ) as box:
        out = await sh(box, "cp /probe /data/p && /probe setcap /data/p")
        assert out.startswith("setcap=") and out != "setcap=0\n", out
    assert "security.capability" not in os.listxattr(shared / "p")
    assert _host_caps_of(shared / "p") == 0


# --- escapes with the default set ----------------------------------------------------------


async def test_default_capabilities_do_not_open_devices(
    runtime: boxlite.Boxlite, probe_rootfs: Path, tmp_path: Path
) -> None:
    """CAP_MKNOD: a node of /dev/mem, of a disk (virtio-blk, sd, the guest's vda) or of a tty
    made anywhere writable in the box never opens (namespace engine: mknod itself is refused in
    the box's user namespace; VM engine: every writable mount of the box is nodev)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    async with boxlite.SimpleBox(
        rootfs_path=str(probe_rootfs), runtime=runtime, volumes=[(str(shared), "/data")]
    ) as box:
        for where in ("/", "/tmp", "/dev", "/dev/shm", "/run", "/data", "/root"):
            for kind, major, minor in (("c", 1, 1), ("b", 254, 0), ("b", 253, 0), ("b", 8, 0), ("c", 4, 1)):
                node = f"{where.rstrip('/')}/n{kind}{major}"
                out = await sh(box, f"/probe mknod {node} {kind} {major} {minor}")
                made, opened = (int(line.split("=")[1]) for line in out.split())
                assert opened != 0, (node, out)
                assert made != 0 or opened == errno.EACCES, (node, out)
        out = await sh(box, "/probe mknod /dev/pts/x c 1 1")
        assert "open=0" not in out, out
        assert (await box.exec("cat", "/dev/null")).exit_code == 0  # the standard devices still work
        assert (await box.exec("head", "-c", "4", "/dev/urandom")).exit_code == 0


async def test_default_capabilities_do_not_mount_load_modules_or_change_the_network(
    runtime: boxlite.Boxlite, probe_rootfs: Path
) -> None:
    async with boxlite.SimpleBox(rootfs_path=str(probe_rootfs), runtime=runtime) as box:
        mounted = await box.exec("mount", "-t", "tmpfs", "none", "/tmp")
        assert mounted.exit_code != 0, mounted
        assert await sh(box, "/probe module") == f"finit_module={errno.EPERM}\ninit_module={errno.EPERM}\n"
        assert await sh(box, "/probe ifdown lo") == f"ifdown={errno.EPERM}\n"
        assert "ok" not in await sh(box, "echo 1 > /proc/sys/net/ipv4/ip_forward && echo ok")
        # SYS_CHROOT: the classic chroot escape starts with a chroot call, which stays denied
        assert await sh(box, "mkdir -p /j && /probe chroot /j") == f"chroot={errno.EPERM}\n"


async def test_default_capabilities_do_not_reach_the_agent_or_host_files(
    runtime: boxlite.Boxlite, probe_rootfs: Path
) -> None:
    """DAC_OVERRIDE and KILL over the agent (PID 1 of the box): its root (the supervisor root
    with host paths, or the guest's initramfs), its environment and its fds stay closed; a
    SIGKILL does not reach it."""
    async with boxlite.SimpleBox(rootfs_path=str(probe_rootfs), runtime=runtime) as box:
        for path in ("/proc/1/root/", "/proc/1/cwd/"):
            listed = await box.exec("ls", path)
            assert listed.exit_code != 0, (path, listed)
        fds = [f"/proc/1/fd/{n}" for n in range(16)]  # their numbers may show (DAC_OVERRIDE), never what they are
        for path in ("/proc/1/environ", "/proc/1/mem", "/proc/1/root/run/boxlite/agent.log", *fds):
            read = await box.exec("head", "-c", "1", path)
            assert read.exit_code != 0 and read.stdout == "", (path, read)
        script = "for f in /proc/1/fd/*; do readlink $f; done; readlink /proc/1/exe"
        links = (await box.exec("sh", "-c", script)).stdout
        assert "/" not in links and "socket" not in links and "pipe" not in links, links
        await box.exec("kill", "-9", "1")
        assert (await box.exec("echo", "alive")).stdout == "alive\n"


async def test_capabilities_beyond_the_default_set_are_refused(runtime: boxlite.Boxlite, busybox_rootfs: Path) -> None:
    refused = ["ALL", "SYS_ADMIN", "SYS_MODULE", "SYS_RAWIO", "SYS_PTRACE", "SYS_TIME", "MAC_ADMIN", "BPF",
               "PERFMON", "DAC_READ_SEARCH", "NET_ADMIN", "SYS_BOOT", "LINUX_IMMUTABLE"]  # fmt: skip
    for cap in refused:
        opts = AdvancedBoxOptions(capabilities=ContainerCapabilities(add=[cap]))
        with pytest.raises(UnsupportedOptionError, match=cap):
            await runtime.create(boxlite.BoxOptions(rootfs_path=str(busybox_rootfs), advanced=opts))
    assert await runtime.list_info() == []


async def test_copy_out_of_a_file_with_capabilities_lands_without_them(
    runtime: boxlite.Boxlite, probe_rootfs: Path, open_dir: Path
) -> None:
    """Box root may setcap its own files (SETFCAP, no writable volume); copying one out to the
    host must not carry the capability along (the host extractor applies no xattrs)."""
    async with boxlite.SimpleBox(rootfs_path=str(probe_rootfs), runtime=runtime) as box:
        assert await sh(box, "cp /probe /p && /probe setcap /p") == "setcap=0\n"
        await box.copy_out("/p", str(open_dir / "p"))
    copied = open_dir / "p"
    assert copied.is_file() and "security.capability" not in os.listxattr(copied)
    assert _host_caps_of(copied) == 0
