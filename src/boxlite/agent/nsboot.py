"""Namespace engine boot: build the box's namespaces and mounts, then become its agent.

Run by the host as ``python3 -I -S -c <bootstrap> <config.json>`` with the status pipe and the
lifeline inherited. Process A (host pid namespace, real root) makes the box cgroups, unshares
pid/net/ipc/uts namespaces and forks B, PID 1 of the box. B unshares its mount namespace,
mounts the supervisor root and the box root, pivots, then unshares a user namespace whose maps
A writes. B joins the box's cgroup v1 hierarchies itself, first thing, by writing 0 to their
``tasks`` files (:func:`_join_own_cgroups`); on v2, A moves B (``cgroup.procs``) while B mounts,
a move that waits for an RCU grace period (7-15 ms here). B waits for A's moves ("M", at once on
v1) before it unshares its cgroup namespace (rooted at the box cgroup,
owned by the host's user namespace like every namespace but the user one) and its user
namespace, then for its maps ("G"); nothing of the box runs before. Status lines on the pipe:
``pid <host pid of B>``, then ``ready`` or ``error <msg>``. Stdlib only.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket
import sys

from . import keeper, leanjson, linux, loopdisk, oom, protocol
from .linux import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT
from .mountpoint import tmpfs_sizes, volume_target
from .netns import allow_low_ports
from .seccomp import build_filter
from .server import Agent
from .spawn import Confinement

TYPE_CHECKING = False  # not from typing (~2 ms to import into every box's agent)
if TYPE_CHECKING:
    from typing import Any

BOX = "/box"
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
# What box processes could read of PID 1 (the agent) that shows its supervisor root's mounts,
# whose sources are host paths (the run dir, the agent code): masked with /dev/null.
PID1_MOUNT_FILES = ("mountinfo", "mounts", "mountstats")


def main() -> None:
    """Standalone entry: the config is argv[1]; the status pipe fd is named in it."""
    boot(leanjson.loads(sys.argv[1]))


def boot(config: dict[str, Any]) -> None:
    """Process A: cgroups, namespaces, fork B (PID 1), write B's user namespace maps, exit."""
    status = int(config["status_fd"])
    log_fd = config.get("log_fd")
    if log_fd is not None:
        os.dup2(int(log_fd), 1)
        os.dup2(int(log_fd), 2)
    try:
        keeper_sock = keeper.fork_keeper(config, status)  # first: it stays in the host's cgroups/namespaces
        keeper.make_cgroups(config)  # only now: no box cgroup exists without a keeper to remove it
        for procs in config.get("cgroup_procs", []):  # the memory cgroup's: the agent tells OOM kills
            if config.get("oom_fd") is None:  # from other SIGKILLs
                config["oom_fd"] = oom.open_counter(os.path.dirname(procs))
        if (config.get("volumes") or config.get("idmap_layers")) and config.get("idmap_fd") is None:
            # made before the pid namespace, so the short-lived holder process is not its init
            config["idmap_fd"] = linux.mapping_userns(0, int(config["uid_base"]), int(config.get("uid_count", 65536)))
        moved_by_a = _split_cgroup_joins(config)
        linux.unshare(linux.CLONE_NEWPID | linux.CLONE_NEWNET | linux.CLONE_NEWIPC | linux.CLONE_NEWUTS)
        to_child_r, to_child_w = os.pipe()
        to_parent_r, to_parent_w = os.pipe()
        pid = os.fork()
    except OSError as e:
        _report(status, protocol.STATUS_ERROR, str(e))
        os._exit(1)
    if pid == 0:
        if keeper_sock is not None:
            keeper_sock.close()
        os.close(to_child_w)
        os.close(to_parent_r)
        _box_init(config, status, to_child_r, to_parent_w)
        os._exit(0)
    os.close(to_child_r)
    os.close(to_parent_w)
    _report(status, protocol.STATUS_PID, str(pid))
    keeper.hand_over(keeper_sock, pid)
    try:
        for procs in moved_by_a:  # v2: while B mounts (see the module docstring)
            with open(procs, "w") as f:
                f.write(str(pid))
    except OSError as e:
        _report(status, protocol.STATUS_ERROR, f"joining cgroup {os.path.dirname(procs)}: {e.strerror}")
        os.kill(pid, 9)
        os._exit(1)
    try:
        os.write(to_child_w, b"M")
    except BrokenPipeError:
        os._exit(1)  # the child failed and reported why
    if os.read(to_parent_r, 1) != b"U":
        os._exit(1)  # the child failed and reported why
    try:
        base, count = int(config["uid_base"]), int(config.get("uid_count", 65536))
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(f"0 {base} {count}\n")
    except OSError as e:
        _report(status, protocol.STATUS_ERROR, f"writing user namespace maps: {e}")
        os.kill(pid, 9)
        os._exit(1)
    os.write(to_child_w, b"G")
    os._exit(0)


def _split_cgroup_joins(config: dict[str, Any]) -> list[str]:
    """Sort the box's cgroups into those B joins itself (v1: their ``tasks`` files, kept in
    ``config["cgroup_tasks"]``) and those A moves B into (v2: the ``cgroup.procs`` returned)."""
    tasks, procs_files = [], []
    for procs in config.get("cgroup_procs", []):
        own = os.path.join(os.path.dirname(procs), "tasks")
        if os.path.exists(own):
            tasks.append(own)
        else:
            procs_files.append(procs)
    config["cgroup_tasks"] = tasks
    return procs_files


def _join_own_cgroups(tasks_files: list[str]) -> None:
    """B, first thing: join the box's v1 cgroups by writing 0 to each ``tasks`` file. The kernel
    moves the calling thread then without taking its global threadgroup lock, whose first taker
    after a quiet spell waits for an RCU grace period: 0.2 ms a move this way, 7-15 ms for a pid
    written to ``cgroup.procs`` (measured on this 2-core host; it was the largest step of a
    start). B was just forked, so its one thread is all of it."""
    for tasks in tasks_files:
        try:
            fd = os.open(tasks, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        except OSError as e:
            raise OSError(f"joining cgroup {os.path.dirname(tasks)}: {e.strerror}") from None


SECCOMP_PROGRAM = build_filter()
"""Built once in the zygote, before it forks any box: each box's PID 1 shares these bytes instead of
allocating its own (pages written after the fork stay private to each box)."""


def reuse_idmap(config: dict[str, Any], cache: dict[tuple[int, int], int]) -> None:
    """Zygote side: a box's id-mapping user namespace (for id-mapped layers and volumes) depends
    on its uid range only, so the zygote makes it once per range and each box inherits it."""
    if not (config.get("volumes") or config.get("idmap_layers")):
        return
    key = (int(config["uid_base"]), int(config.get("uid_count", 65536)))
    if key not in cache:
        try:
            cache[key] = linux.mapping_userns(0, *key)
        except OSError:
            return  # the boot process tries again and reports the error on the status pipe
    config["idmap_fd"] = cache[key]


def _report(fd: int, word: str, arg: str = "") -> None:
    os.write(fd, protocol.status_line(word, arg))


def _box_init(config: dict[str, Any], status: int, from_parent: int, to_parent: int) -> None:
    """PID 1 of the box: mounts, pivot, user namespace, then the agent loop."""
    try:
        _join_own_cgroups(config.get("cgroup_tasks") or [])  # before anything of the box is made
        _neutral_cmdline()
        sup = config["sup_dir"]
        _setup_mounts(config, sup)
        linux.set_loopback_up()
        allow_low_ports()
        linux.sethostname(config["hostname"])
        os.chdir(sup)
        linux.pivot_root(".", ".")
        linux.umount(".", linux.MNT_DETACH)
        os.chdir("/")
        cap_last = linux.last_cap()
        if os.read(from_parent, 1) != b"M":
            raise OSError("the box cgroups were not joined")
        linux.unshare(linux.CLONE_NEWCGROUP)  # now that this process is in every box cgroup
        linux.unshare(linux.CLONE_NEWUSER)
        os.write(to_parent, b"U")
        if os.read(from_parent, 1) != b"G":
            raise OSError("user namespace maps were not written")
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        os.setgroups([0])
        linux.prctl(linux.PR_SET_DUMPABLE, 0)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        path = "/run/boxlite/agent.sock"
        if os.path.lexists(path):
            os.unlink(path)
        sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(64)
        lifeline = config.get("lifeline_fd")
        confinement = Confinement(root=BOX, seccomp_program=SECCOMP_PROGRAM, cap_last=cap_last)
        if isinstance(config.get("cap_mask"), int):  # None: the default set
            confinement.cap_mask = int(config["cap_mask"])
        agent = Agent(confinement, lifeline, log_dir="/run/boxlite")
        # PID 1 of a pid namespace gets no signal from inside it for which it has no handler;
        # Python's SIGINT handler (KeyboardInterrupt) would let box root kill the agent.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        agent.oom_counter = config.get("oom_fd")
        agent.sync_on_shutdown = False  # the box's files are the host's: nothing to flush for it
        agent.listen(sock)
        _redirect_stdio()
        if config.get("log_fd") is not None:
            os.close(int(config["log_fd"]))
        idle = config.get("spawner_idle")  # seconds unused before the spawner is retired (the engine's)
        agent.spawner_idle = float(idle) if isinstance(idle, (int, float)) and idle > 0 else None
    except BaseException as e:
        _report(status, protocol.STATUS_ERROR, str(e))
        os._exit(1)
    _report(status, protocol.STATUS_READY)
    os.close(status)
    for fd in (from_parent, to_parent):
        os.close(fd)
    try:  # after "ready": its fork (~1 ms) and confinement overlap the host's connect and first request
        agent.start_spawner()
    except OSError:  # e.g. no process left under the pids limit: the agent spawns commands itself
        pass
    agent.serve_forever()


def _neutral_cmdline(title: bytes = b"boxlite-agent") -> None:
    """Blank this process's argv area, which box processes read as /proc/1/cmdline: the
    zygote's argv names the host directory of the agent code. (Python copied argv at start-up.)"""
    with open("/proc/self/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (fields 48 and 49)
    if end - start > len(title):
        ctypes.memset(start, 0, end - start)
        ctypes.memmove(start, title, len(title))


def _redirect_stdio() -> None:
    """stdin/stdout from /dev/null; stderr (tracebacks) to run/agent.log on the host."""
    null = os.open("/dev/null", os.O_RDWR)
    log = os.open("/run/boxlite/agent.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    for fd, src in ((0, null), (1, null), (2, log)):
        os.dup2(src, fd)
    os.close(null)
    os.close(log)


def _setup_mounts(config: dict[str, Any], sup: str) -> None:
    uid_base = int(config["uid_base"])
    linux.unshare(linux.CLONE_NEWNS)  # B's own: pivot_root must not move A's root
    linux.mount(None, "/", None, MS_REC | MS_PRIVATE)
    linux.mount("tmpfs", sup, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=16m")
    # Host software the agent itself runs on, read-only, at the same paths.
    for top in ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        src = "/" + top
        if os.path.islink(src):
            os.symlink(os.readlink(src), f"{sup}/{top}")
        elif os.path.isdir(src):
            _bind(src, sup + src, readonly=True)
    for src in config.get("ro_binds", []):
        if not src.startswith("/usr/"):
            _bind(src, sup + src, readonly=True)
    os.makedirs(f"{sup}/run/boxlite", exist_ok=True)
    _bind(config["run_dir"], f"{sup}/run/boxlite")
    os.makedirs(f"{sup}/dev", exist_ok=True)
    for dev in ("null", "urandom"):
        _bind_file(f"/dev/{dev}", f"{sup}/dev/{dev}")
    os.makedirs(f"{sup}/proc", exist_ok=True)
    os.makedirs(f"{sup}/tmp", mode=0o1777, exist_ok=True)  # exists when the agent code lives under /tmp
    if config.get("disk_image"):
        _mount_disk(config, uid_base)
    # The box root: image layers + the box's writable layer.
    root = sup + BOX
    os.makedirs(root)
    os.chdir(config["layer_links"])  # short relative lowerdir names keep the options small
    idmap_fd = config.get("idmap_fd")
    for i, layer in enumerate(config.get("idmap_layers", [])):
        _bind_layer(layer, str(i), idmap_fd)
    lower = ":".join(str(i) for i in reversed(range(int(config["layer_count"]))))
    # Relative paths too: the options show in the box's mountinfo, absolute ones would name
    # the host's box directory.
    upper = os.path.relpath(config["upperdir"])
    work = os.path.relpath(config["workdir"])
    _mount_root(root, f"lowerdir={lower},upperdir={upper},workdir={work}", work, bool(config.get("volatile_upper")))
    for name, mode in (("proc", 0o555), ("dev", 0o755), ("tmp", 0o1777), ("sys", 0o555), ("run", 0o755)):
        path = f"{root}/{name}"
        if not os.path.isdir(path):
            if os.path.lexists(path):
                os.unlink(path)
            os.mkdir(path, mode)
            os.chown(path, uid_base, uid_base)
    linux.mount("proc", f"{sup}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    linux.mount("proc", f"{root}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    sizes = tmpfs_sizes(config.get("memory_mib"))
    _setup_dev(f"{root}/dev", uid_base, sizes["shm"])
    linux.mount(
        "tmpfs", f"{root}/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,uid={uid_base},gid={uid_base}{sizes['tmp']}"
    )
    linux.mount(
        "tmpfs", f"{root}/run", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=755,uid={uid_base},gid={uid_base}{sizes['run']}"
    )
    if config.get("resolv_conf") and os.path.isdir(f"{root}/etc"):
        try:
            target = volume_target(root, "/etc/resolv.conf", False, uid_base)
        except OSError as e:  # e.g. the image made it a symlink: leave the image's file alone
            print(f"boxlite: not providing /etc/resolv.conf: {e}", file=sys.stderr)
        else:
            try:  # a copy on the supervisor tmpfs: mountinfo shows a bind's source path
                with open(config["resolv_conf"], "rb") as given, open(f"{sup}/resolv.conf", "wb") as copy:
                    copy.write(given.read(4096))
                linux.bind_idmapped(f"{sup}/resolv.conf", target, None, True)
            finally:
                os.close(target)
    for host, guest, readonly in config.get("volumes", []):
        target = volume_target(root, guest, os.path.isdir(host), uid_base)
        try:
            try:
                linux.bind_idmapped(host, target, idmap_fd, readonly)
            except OSError:  # this filesystem cannot id-map: plain bind, host ownership shows as-is
                linux.bind_idmapped(host, target, None, readonly)
        finally:
            os.close(target)
    if idmap_fd is not None:
        os.close(int(idmap_fd))
    for name in PID1_MOUNT_FILES:
        for path in (f"{root}/proc/1/{name}", f"{root}/proc/1/task/1/{name}"):
            if os.path.exists(path):
                _bind_file("/dev/null", path, create=False)


def _mount_disk(config: dict[str, Any], uid_base: int) -> None:
    """``disk_size_gb``: the writable layer's own ext4 image, mounted in this mount namespace only.
    Its loop device clears itself once nothing holds it: the mount goes with the box."""
    fd, dev = loopdisk.attach(config["disk_image"])
    try:
        linux.mount(dev, config["disk_mount"], "ext4", MS_NOSUID | MS_NODEV, "noinit_itable")
    finally:
        os.close(fd)
    for path, mode, owner in (
        (config["upperdir"], int(config.get("upper_mode", 0o755)), uid_base),
        (config["workdir"], 0o700, 0),
    ):
        if not os.path.isdir(path):  # the first start
            os.mkdir(path, mode)
            os.chmod(path, mode)
            os.chown(path, owner, owner)


def _mount_root(root: str, options: str, work: str, volatile: bool) -> None:
    """The box root's overlay. ``volatile`` (a box removed when it stops): no sync of the upper
    file system when the overlay goes, which is when PID 1 dies. Without it that unmount flushes
    every dirty page of the host file system holding the box's directory: each teardown waited
    for other processes' writes (~0.5 s per box in bench_core.py's section with a writer).
    The price, a throwaway layer's writes not being durable across a host crash, is nil."""
    # nodev: device nodes in image layers or created by box root are inert (the box's /dev is a
    # separate tmpfs with bind-mounted devices); nosuid: setuid bits grant nothing.
    if volatile:
        for marker in (f"{work}/work/incompat/volatile", f"{work}/work/incompat"):
            try:  # left by an earlier volatile mount; overlay refuses the work dir while it is there
                os.rmdir(marker)
            except OSError:
                pass
        try:
            linux.mount("overlay", root, "overlay", MS_NOSUID | MS_NODEV, options + ",volatile")
            return
        except OSError as e:
            if e.errno != errno.EINVAL:  # EINVAL: a kernel before 5.10 has no such option
                raise
    linux.mount("overlay", root, "overlay", MS_NOSUID | MS_NODEV, options)


def _bind_layer(layer: str, mountpoint: str, idmap_fd: int | None) -> None:
    """Layer dirs hold the image's ownership: a read-only bind, id-mapped to the box's uids,
    becomes the overlay's lower layer (copy-up then gives the upper file the shifted owner)."""
    target = os.open(mountpoint, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        linux.bind_idmapped(layer, target, idmap_fd, True)
    except OSError as e:
        raise OSError(
            e.errno, f"id-mapping image layer {mountpoint} (does its filesystem support id-mapped mounts?): {e}"
        ) from None
    finally:
        os.close(target)


def _setup_dev(dev: str, uid_base: int, shm_size: str = "") -> None:
    linux.mount("tmpfs", dev, "tmpfs", MS_NOSUID, f"mode=755,size=64k,uid={uid_base},gid={uid_base}")
    for name in DEVICES:
        _bind_file(f"/dev/{name}", f"{dev}/{name}")
    os.makedirs(f"{dev}/pts")
    os.makedirs(f"{dev}/shm", mode=0o1777)
    os.chmod(f"{dev}/shm", 0o1777)
    pts_options = f"newinstance,ptmxmode=0666,mode=0620,gid={uid_base + 5}"
    linux.mount("devpts", f"{dev}/pts", "devpts", MS_NOSUID | MS_NOEXEC, pts_options)
    linux.mount(
        "tmpfs", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,uid={uid_base},gid={uid_base}{shm_size}"
    )
    linux.make_dev_links(dev)


def _bind(src: str, dst: str, readonly: bool = False) -> None:
    os.makedirs(dst, exist_ok=True)
    linux.mount(src, dst, None, MS_BIND | MS_REC)
    if readonly:
        linux.mount(None, dst, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _bind_file(src: str, dst: str, create: bool = True) -> None:
    if create:
        with open(dst, "w"):
            pass
    linux.mount(src, dst, None, MS_BIND)


if __name__ == "__main__":
    main()
