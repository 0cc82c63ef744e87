"""VM engine: PID 1 of the guest. Mount disks and the box root, then become the agent.

Started by the initramfs ``/init`` as ``python3.11 -I -S``. Opens the virtio-serial port
named ``boxlite.agent``, writes ``WAITING`` and reads one JSON line of box settings from the
host (layer count, hostname, wall clock, RNG seed; never environment variables). A template
boot (``boxlite.template=1`` on the kernel command line) imports the agent first, so that the
host can snapshot the VM while it waits and later restore that snapshot for any box. It finds the root disks by
virtio-blk serial (``boxlite-lower``: read-only image layers in dirs ``0..N-1``;
``boxlite-upper``: the box's writable ext4), stacks them with overlayfs at ``/box`` with the
same in-root layout as the namespace engine, opens the virtio-serial port named
``boxlite.agent`` and serves the agent protocol on it. When the agent returns (``shutdown``)
it syncs, unmounts and reboots, which makes QEMU (``-no-reboot``) exit.
Progress lines ``boxlite-init: <stage> <seconds since boot>`` go to the console. Stdlib only.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import time

from . import linux, oom
from .linux import MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REMOUNT
from .mountpoint import tmpfs_sizes, volume_target
from .netns import allow_low_ports

TYPE_CHECKING = False  # not from typing (~2 ms to import into every box's agent)
if TYPE_CHECKING:
    from typing import Any

BOX = "/box"
LOWER = "/run/boxlite/lower"
RW = "/run/boxlite/rw"
LOGS = f"{RW}/logs"
BOX_CGROUP = "/sys/fs/cgroup/box"
AGENT_PORT = "boxlite.agent"
WAITING = b"boxlite-vminit-waiting\n"
BLKFLSBUF = 0x1261
RNDRESEEDCRNG = 0x5207
RB_AUTOBOOT = 0x01234567
DEVICES = {  # name: (major, minor), as in the namespace engine's /dev
    "null": (1, 3),
    "zero": (1, 5),
    "full": (1, 7),
    "random": (1, 8),
    "urandom": (1, 9),
    "tty": (5, 0),
}


def stage(name: str, at: float | None = None) -> None:
    """Print a boot-stage marker (parsed by the host for boot metrics): seconds since boot
    (``/proc/uptime``'s clock), now or ``at``, a :func:`since_boot` reading taken earlier."""
    os.write(2, f"boxlite-init: {name} {since_boot() if at is None else at:.4f}\n".encode())


def since_boot() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def cmdline() -> dict[str, str]:
    """``boxlite.KEY=VALUE`` pairs of the kernel command line."""
    with open("/proc/cmdline") as f:
        words = f.read().split()
    out = {}
    for w in words:
        key, sep, value = w.partition("=")
        if key.startswith("boxlite.") and sep:
            out[key[len("boxlite.") :]] = value
    return out


def mount_basics() -> None:
    linux.mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    linux.mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    linux.mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=755")


def disks_by_serial() -> dict[str, str]:
    """``/dev/vdX`` of each virtio-blk disk by serial. A restored box's disks take the places
    of the template's placeholders, so the template's answer holds for it."""
    disks: dict[str, str] = {}
    for name in sorted(os.listdir("/sys/block")):
        try:
            with open(f"/sys/block/{name}/serial") as f:
                disks.setdefault(f.read().strip(), f"/dev/{name}")
        except OSError:
            continue
    return disks


def disk(disks: dict[str, str], serial: str) -> str:
    try:
        return disks[serial]
    except KeyError:
        raise OSError(errno.ENODEV, f"no disk with serial {serial!r}") from None


def find_port(name: str, timeout: float = 10.0) -> int:
    """Open the virtio-serial port called ``name`` (retrying while the driver settles)."""
    deadline = time.monotonic() + timeout
    while True:
        for entry in sorted(os.listdir("/sys/class/virtio-ports")):
            try:
                with open(f"/sys/class/virtio-ports/{entry}/name") as f:
                    if f.read().strip() != name:
                        continue
                return os.open(f"/dev/{entry}", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as e:
                if e.errno not in (errno.ENXIO, errno.ENOENT, errno.EBUSY) or time.monotonic() > deadline:
                    raise
        if time.monotonic() > deadline:
            raise OSError(errno.ENODEV, f"no virtio-serial port named {name!r}")
        time.sleep(0.005)


def mount_root(layers: int, disks: dict[str, str]) -> None:
    """Overlay of the read-only layer disk and the writable box disk at ``/box`` (its mount
    points are made before the handshake)."""
    if layers:
        linux.mount(disk(disks, "boxlite-lower"), LOWER, "ext4", MS_RDONLY | MS_NOSUID | MS_NODEV, "noload")
    linux.mount(disk(disks, "boxlite-upper"), RW, "ext4", MS_NOSUID | MS_NODEV, "noinit_itable")
    for d in ("upper", "work"):
        os.makedirs(f"{RW}/{d}", exist_ok=True)
    if not layers:
        os.makedirs(f"{RW}/empty", exist_ok=True)
    lower = ":".join(f"{LOWER}/{i}" for i in reversed(range(layers))) or f"{RW}/empty"
    # nodev: device nodes of the image (or made by a later guest root) are inert, e.g. a node
    # of the virtio disks or of the console; nosuid: setuid bits grant nothing.
    opts = f"lowerdir={lower},upperdir={RW}/upper,workdir={RW}/work"
    linux.mount("overlay", BOX, "overlay", MS_NOSUID | MS_NODEV, opts)


def setup_box_mounts(memory_mib: object = None) -> None:
    """/proc, /dev (+pts, shm), /tmp, /run inside the box, like the namespace engine (tmpfs
    sizes too: without them each could take half the guest's RAM)."""
    sizes = tmpfs_sizes(int(str(memory_mib)) if memory_mib else None)
    for name, mode in (("proc", 0o555), ("dev", 0o755), ("tmp", 0o1777), ("sys", 0o555), ("run", 0o755)):
        path = f"{BOX}/{name}"
        if not os.path.isdir(path):
            if os.path.lexists(path):
                os.unlink(path)
            os.mkdir(path, mode)
    linux.mount("proc", f"{BOX}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    # Box root owns the guest's /proc/sys files and could retune the guest kernel (console log
    # level, memory, network): read-only, as in the namespace engine (and Docker).
    sysctls = f"{BOX}/proc/sys"
    linux.mount(sysctls, sysctls, None, linux.MS_BIND | linux.MS_REC)
    linux.mount(None, sysctls, None, linux.MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    dev = f"{BOX}/dev"
    # nodev: box root holds CAP_MKNOD, and a node it made of a guest disk, the agent's port or
    # /dev/mem must not open. The standard devices are binds of the guest devtmpfs's nodes.
    linux.mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=64k")
    for name in DEVICES:
        with open(f"{dev}/{name}", "w"):
            pass
        linux.mount(f"/dev/{name}", f"{dev}/{name}", None, linux.MS_BIND)
    os.makedirs(f"{dev}/pts")
    os.makedirs(f"{dev}/shm", mode=0o1777)
    linux.mount("devpts", f"{dev}/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5")
    linux.mount("tmpfs", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777{sizes['shm']}")
    linux.make_dev_links(dev)
    linux.mount("tmpfs", f"{BOX}/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777{sizes['tmp']}")
    linux.mount("tmpfs", f"{BOX}/run", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=755{sizes['run']}")


def power_off() -> None:
    """Sync, make the writable disk clean, and reboot (QEMU exits: ``-no-reboot``)."""
    os.sync()
    for target in (f"{BOX}/dev/pts", f"{BOX}/dev/shm", f"{BOX}/dev", f"{BOX}/proc", f"{BOX}/tmp", f"{BOX}/run", BOX):
        try:
            linux.umount(target, linux.MNT_DETACH)
        except OSError:
            pass
    try:
        linux.mount(None, RW, None, MS_REMOUNT | MS_RDONLY)
    except OSError:
        pass
    os.sync()
    linux._libc.reboot(RB_AUTOBOOT)
    os._exit(1)  # reboot failed: PID 1 exiting panics the kernel, which also ends the VM


def prepare_box(conf: dict[str, Any], disks: dict[str, str]) -> None:
    """Everything the box root needs (run by the preparer, in parallel with PID 1's own work)."""
    mount_root(int(conf.get("layers") or 0), disks)
    setup_box_mounts(conf.get("memory_mib"))
    linux.sethostname(str(conf.get("hostname") or "box"))
    for i, (box_path, readonly, name) in enumerate(conf.get("volumes") or []):
        mount_volume(i, box_path, bool(readonly), name)
    net = conf.get("net")
    if net:
        linux.configure_ipv4("eth0", net["address"], net["netmask"], net["gateway"])
        bind_resolv_conf(str(net["dns"]))


def mount_volume(index: int, box_path: str, readonly: bool, name: str) -> None:
    """virtiofs share ``index`` at /run/boxlite/vol/<index> (outside the box root), then bind
    the shared directory, or the file ``name`` in it, at ``box_path`` in the box."""
    share = f"/run/boxlite/vol/{index}"
    os.makedirs(share, exist_ok=True)
    flags = MS_NOSUID | MS_NODEV | (MS_RDONLY if readonly else 0)
    linux.mount(f"boxlite-vol{index}", share, "virtiofs", flags)
    source = f"{share}/{name}" if name else share
    if name and (os.path.islink(source) or not os.path.isfile(source)):
        raise OSError(errno.ENOENT, f"volume file {name!r} is gone from its host directory")
    target = volume_target(BOX, box_path, not name, 0)  # no symlink on the way (checked)
    try:
        linux.mount(source, f"/proc/self/fd/{target}", None, linux.MS_BIND)
    finally:
        os.close(target)
    if readonly:  # the new mount is reached by path (the fd names what lies beneath it)
        where = os.path.join(BOX, box_path.lstrip("/"))
        linux.mount(None, where, None, linux.MS_BIND | MS_REMOUNT | flags)


def bind_resolv_conf(dns: str) -> None:
    """The box's /etc/resolv.conf names QEMU's DNS relay (a read-only bind, as in the
    namespace engine; the file is created in the box when its image has none)."""
    path = "/run/boxlite/resolv.conf"
    with open(path, "w") as f:
        f.write(f"nameserver {dns}\n")
    target = f"{BOX}/etc/resolv.conf"
    if os.path.islink(f"{BOX}/etc") or os.path.islink(target):
        return  # never follow the image's symlinks out of the box root
    os.makedirs(f"{BOX}/etc", exist_ok=True)
    if not os.path.exists(target):
        with open(target, "w"):
            pass
    linux.mount(path, target, None, linux.MS_BIND)
    linux.mount(None, target, None, linux.MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def make_isolated_netns() -> int:
    """A fresh network namespace (loopback up) for a box without network, made before the
    handshake and entered by :func:`isolate_network`: a template VM makes it before its snapshot,
    so a restored box skips the namespace's creation (~30 ms of cold guest code under TCG). Every
    box restores its own copy of the guest, so no two boxes share it."""
    own = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        linux.unshare(linux.CLONE_NEWNET)
        linux.set_loopback_up()
        isolated = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        linux.setns(own, linux.CLONE_NEWNET)
    finally:
        os.close(own)
    return isolated


def isolate_network(isolated: int) -> None:
    """A box without network gets a network namespace of its own: loopback only."""
    linux.setns(isolated, linux.CLONE_NEWNET)


def start_preparer() -> tuple[int, int]:
    """Fork the *preparer*, a child that runs :func:`prepare_box` once the box's settings come
    through a pipe; mounts are shared (same namespace). Forked before the handshake, it finds the
    disks and waits, so a template's snapshot holds it ready: a restored box pays neither the fork
    nor the lookup. Returns (its pid, the pipe's write end); closing that end unsent ends it."""
    settings_r, settings_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(settings_w)
        code = 0
        try:
            disks = disks_by_serial()
            data = bytearray()
            while chunk := os.read(settings_r, 65536):
                data += chunk
            if data:
                from . import leanjson

                prepare_box(leanjson.loads(data), disks)
        except BaseException:  # reported on the console, then exit status
            import traceback  # only when something failed: not at every agent start

            traceback.print_exc()
            code = 1
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(settings_r)
    return pid, settings_w


def send_settings(settings_w: int, settings: dict[str, object]) -> None:
    """``settings`` as JSON into a pipe, then its close: the preparer and the pre-forked
    spawner each read their pipe until EOF."""
    from . import leanjson

    data = leanjson.dumps(settings).encode()
    try:
        while data:
            data = data[os.write(settings_w, data) :]
    finally:
        os.close(settings_w)


def handshake(fd: int) -> dict[str, object]:
    """Tell the host we wait, then read one JSON line of box settings (byte by byte, so no
    protocol frame sent right after it is consumed here)."""
    import select

    from . import leanjson

    os.write(fd, WAITING)
    line = bytearray()
    while not line.endswith(b"\n"):
        select.select([fd], [], [])
        try:
            chunk = os.read(fd, 1)
        except BlockingIOError:
            continue
        if not chunk:
            time.sleep(0.01)  # host not connected (yet)
            continue
        line += chunk
    conf = leanjson.loads(line)
    if not isinstance(conf, dict):
        raise ValueError("box settings are not a JSON object")
    return conf


def set_clock(conf: dict[str, object]) -> None:
    """Wall clock from the host (a restored snapshot has a stale one)."""
    if conf.get("time_ns"):
        time.clock_settime_ns(time.CLOCK_REALTIME, int(str(conf["time_ns"])))


def reseed(conf: dict[str, object]) -> None:
    """Randomness from the host (a restored snapshot has the template's RNG state)."""
    import fcntl

    seed = bytes.fromhex(str(conf.get("seed", "")))
    if seed and "random" in sys.modules:  # loaded before the snapshot: same state in every box
        sys.modules["random"].seed(seed)
    if seed:
        with open("/dev/urandom", "wb") as f:
            f.write(seed)
            f.flush()
            try:
                fcntl.ioctl(f.fileno(), RNDRESEEDCRNG)
            except OSError:
                pass


def drop_disk_caches() -> None:
    """Drop any cached blocks of the disks (before the handshake, so a template's snapshot
    holds none of its placeholders): the box's mounts must read its own disks."""
    import fcntl

    for name in os.listdir("/sys/block"):
        if name.startswith("vd"):
            try:
                dev = os.open(f"/dev/{name}", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.ioctl(dev, BLKFLSBUF)
            except OSError:
                pass
            finally:
                os.close(dev)


def load_agent() -> tuple[Any, Any]:
    """Import the agent and compute its confinement (the slow part of the boot)."""
    from .seccomp import build_filter
    from .server import Agent
    from .spawn import Confinement

    return Agent, Confinement(root=BOX, seccomp_program=build_filter(), cap_last=linux.last_cap())


def prefork_spawner(confinement: Any, isolated: int) -> tuple[Any, int]:
    """Fork the agent's spawner before the handshake, so that a template's snapshot holds it
    forked and waiting: a restored box's first command need not wait for that fork (~0.1 s of
    guest code run for the first time after a restore, under TCG). It enters the box root once
    :func:`send_settings` sends it the box's (closing the returned pipe end unsent ends it)."""
    from .server import fork_spawner

    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    try:
        return fork_spawner(confinement, go_r, isolated), go_w
    finally:
        os.close(go_r)


_box_disk_fd: int | None = None


def sync_box_disk() -> None:
    """Flush the box disk: a VM killed from outside loses its page cache, a process does not.
    The directory stays open (close-on-exec) for the next exec: no open/close per command."""
    global _box_disk_fd
    if _box_disk_fd is None:
        try:
            _box_disk_fd = os.open(RW, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return
    linux._libc.syncfs(_box_disk_fd)


def make_box_cgroup() -> None:
    """The cgroup v2 ``/sys/fs/cgroup/box`` with the pids and memory controllers, made before the
    handshake (a template VM: before its snapshot); :func:`limit_box` sets the box's limits."""
    cg = "/sys/fs/cgroup"
    linux.mount("cgroup2", cg, "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    with open(f"{cg}/cgroup.subtree_control", "w") as f:
        f.write("+pids +memory")
    os.makedirs(f"{cg}/box", exist_ok=True)


def limit_box(pids_limit: object, memory_mib: object, spawner: int | None = None) -> None:
    """Put this process (the agent, PID 1 of the box), the ``spawner`` forked before the
    handshake, and so every box process into the cgroup ``/sys/fs/cgroup/box``
    (:func:`make_box_cgroup`) with the box's pids and memory limits."""
    cg = "/sys/fs/cgroup"
    limits = {"pids.max": pids_limit, "memory.max": int(str(memory_mib)) << 20 if memory_mib else None}
    for name, value in limits.items():
        if value:
            with open(f"{cg}/box/{name}", "w") as f:
                f.write(str(value))
    for pid in (os.getpid(), spawner):
        if pid is not None:
            with open(f"{cg}/box/cgroup.procs", "w") as f:
                f.write(str(pid))


def enter_box_pid_namespace() -> None:
    """Continue as PID 1 of a new PID namespace, so box processes see only the agent and
    themselves (as with the namespace engine). The real PID 1 stays behind: it reaps, and
    powers the VM off when the agent's process ends."""
    linux.unshare(linux.CLONE_NEWPID)
    child = os.fork()
    if child == 0:  # the agent's own /proc shows the box's processes (its "stats")
        linux.mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        return
    while True:
        try:
            pid, _ = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid == child:
            break
    power_off()


def main() -> None:
    in_box_ns = False
    try:
        mount_basics()
        stage("init")
        conf = cmdline()
        if conf.get("probe"):  # accelerator probe boot: show a sign of life and stop
            os.write(2, b"boxlite-probe-ok\n")
            power_off()
        enter_box_pid_namespace()
        in_box_ns = True
        # The agent is PID 1 of the box's pid namespace: no signal from a box process reaches it
        # unless it has a handler, and Python's SIGINT handler would let box root kill it.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        loaded = load_agent() if conf.get("template") == "1" else None
        # Box-independent setup, before the handshake: a template's snapshot holds it already.
        make_box_cgroup()
        isolated = make_isolated_netns()
        linux.set_loopback_up()  # the guest's own namespace, which a box with network uses
        for d in (LOWER, RW, BOX):
            os.makedirs(d, exist_ok=True)
        # No block of the disks stays cached (the kernel read the partition table of each at
        # boot): the mounts read the box's own disks, not a template's placeholders.
        drop_disk_caches()
        child, settings_w = start_preparer()
        spawner, go_w = prefork_spawner(loaded[1], isolated) if loaded else (None, None)
        fd = find_port(AGENT_PORT)
        box = handshake(fd)
        configured = since_boot()
        set_clock(box)  # before the mounts: they write times on the box disk
        settings = {key: box.get(key) for key in ("layers", "hostname", "net", "volumes", "memory_mib")}
        # The preparer mounts meanwhile: a cold boot imports the agent, a restored snapshot
        # reseeds the RNG and sets the box's limits (2 vCPUs: less cold-translated guest code on
        # the way to the first exec).
        send_settings(settings_w, settings)
        # Written once the preparer has its settings: after a restore the first console write
        # runs ~40 ms of guest code for the first time (tty, UART), which the mounts need not wait for.
        stage("configured", configured)
        reseed(box)  # before any box process runs
        limit_box(box.get("pids_limit"), box.get("memory_mib"), spawner.pid if spawner else None)
        agent_cls, confinement = loaded or load_agent()
        _, status = os.waitpid(child, 0)
        if status != 0:
            raise RuntimeError("preparing the box root failed (see above)")
        if go_w is not None:  # the spawner enters the box root now
            send_settings(go_w, {"cap_mask": box.get("cap_mask"), "isolate": not settings["net"]})
        if isinstance(box.get("cap_mask"), int):  # box root's capabilities (None: the default set)
            confinement.cap_mask = int(str(box["cap_mask"]))
        if not settings["net"]:
            isolate_network(isolated)
        os.close(isolated)
        allow_low_ports()  # in the box's network namespace (the guest's own when it has network)
        stage("mounted")
        os.makedirs(LOGS, exist_ok=True)  # detached executions' logs, on the box's own disk
        agent = agent_cls(confinement, None, LOGS)
        # Flush the box disk before each EXIT frame, so that what a finished command wrote
        # survives even a SIGKILL of the VM (~0.5 ms per exec when little is dirty; mounting the
        # disk ``sync`` would cost ~25x on small writes). Not for a disk deleted when the box
        # stops (``volatile``, as the namespace engine's layer of such a box): the host asks
        # with ``sync`` when it copies a running box's disk.
        agent.sync_disk = sync_box_disk
        if not box.get("volatile"):
            agent.before_exit_report = sync_box_disk
        agent.oom_counter = oom.open_counter(BOX_CGROUP)
        agent.start_spawner(spawner)
        agent.attach_stream(fd, fd)
        stage("ready")
        agent.serve_forever()
        stage("shutdown")
    except BaseException:  # PID 1 must never just exit
        print("boxlite-init: fatal error", file=sys.stderr)
        import traceback  # only when something failed: not at every agent start

        traceback.print_exc()
        sys.stderr.flush()
    if in_box_ns:
        os._exit(0)  # the real PID 1 (enter_box_pid_namespace) powers off
    power_off()


if __name__ == "__main__":
    main()
