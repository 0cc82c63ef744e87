"""The namespace engine: a box is a tree of namespaces whose PID 1 is the agent."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
import time
from pathlib import Path

from ...agent.protocol import (
    STATUS_ERROR,
    STATUS_KEEPER,
    STATUS_LINE_MAX,
    STATUS_NET_ERROR,
    STATUS_PID,
    STATUS_READY,
    parse_status,
)
from ...aio import within
from ...errors import ConfigError, EngineError, NetworkError
from .. import diskchain
from ..base import BoxSpec, Engine, RunningBox, process_start_time
from ..net import allowlist, hostguard
from . import cgroups, netstats, network, quota
from .zygote import AGENT_PARENT, Zygote, agent_python

FREEZE_TIMEOUT = 5.0
"""Longest wait for every box process to freeze (a task in uninterruptible sleep delays it)."""
KEEPER_WAIT = 10.0
"""Longest wait for an earlier start's keeper to finish its clean-up (it needs ~1-6 s at most)."""
KEEPER_SPIN = 0.02
"""How long a removal waits for the keeper in a worker thread, in 0.2 ms steps (it needs ~1 ms)."""


SPAWNER_IDLE_ENV = "BOXLITE_SPAWNER_IDLE"
SPAWNER_IDLE = 30.0
"""Seconds a box's spawner may go unused before the agent retires it (``$BOXLITE_SPAWNER_IDLE``;
0: never): an idle box then holds ~1.4 MiB less, and its next command forks a new spawner
(~3.5 ms once; docs/performance.md, "Density")."""


def spawner_idle() -> float | None:
    """The retirement delay for boxes started now (None: never retire)."""
    raw = os.environ.get(SPAWNER_IDLE_ENV)
    if raw is None or raw.strip() == "":
        return SPAWNER_IDLE
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 86400:  # nan fails too
        raise ConfigError(f"{SPAWNER_IDLE_ENV} must be seconds from 0 (never retire) to 86400, got {raw!r}")
    return value or None


def _python_prefix(python: str) -> str:
    real = os.path.realpath(python)
    return str(Path(real).parents[1])


class NamespaceEngine(Engine):
    """Linux namespaces + cgroups + seccomp; needs root (or CAP_SYS_ADMIN) on the host."""

    name = "namespace"
    live_rootfs = True  # bound read-only and id-mapped as the overlay's lower layer
    kill_loses_nothing = True  # PID 1's death ends its pid namespace; the box's files are the host's

    def __init__(self) -> None:
        self._zygotes: dict[str, Zygote] = {}

    async def start(self, spec: BoxSpec) -> RunningBox:
        if os.geteuid() != 0:
            raise EngineError("the namespace engine needs root on the host (it maps box users to a uid range)")
        idle = spawner_idle()  # a bad setting fails the start before anything is made
        layers = self._prepare_dirs(spec)
        lock = spec.layout.keeper_lock
        if _keeper_active(lock):  # the last start's keeper still cleans up: its cgroups are ours to reuse after
            await asyncio.to_thread(_await_keeper, lock)
        pasta, dnsproxy, secretproxy = None, None, None
        volumes = [list(v) for v in spec.volumes]
        if spec.network or spec.ports:
            gid = None
            if spec.allow_net or spec.secrets or spec.public_only:  # its own helper group, rules, proxies
                accept_all = not (spec.allow_net or spec.secrets)  # public-only: the host guard decides
                gid = await asyncio.to_thread(allowlist.claim_gid, spec.box_dir, spec.public_only, accept_all)
            if spec.allow_net and gid is not None:
                entries = allowlist.parse(list(spec.allow_net))
                dnsproxy = allowlist.proxy_command(spec.box_dir, gid, entries)
            if spec.secrets and gid is not None:
                secretproxy, bundle = await asyncio.to_thread(
                    allowlist.secret_proxy_command,
                    *(spec.box_dir, gid, spec.secrets, bool(spec.allow_net), spec.root.layers),
                )
                volumes.append([str(bundle), allowlist.SECRET_BUNDLE, True])
            pasta = network.pasta_command(spec.ports, gid)
        groups, cgroup_setup = cgroups.plan(spec.box_id, spec.memory_mib, spec.cpus, spec.pids_limit)
        groups.save(spec.layout.cgroups_file)
        python = agent_python()
        status_r, status_w = os.pipe()
        config = {  # the zygote adds status_fd, log_fd and lifeline_fd (passed as fds)
            "cgroup_setup": cgroup_setup,  # made by the boot process, once the box's keeper exists
            "cgroup_procs": groups.procs_files,
            "uid_base": spec.root.uid_base,
            "hostname": spec.hostname,
            "memory_mib": spec.memory_mib,
            "sup_dir": str(spec.layout.sup),
            "run_dir": str(spec.run_dir),
            "layer_links": str(spec.layout.layer_links),
            "layer_count": len(spec.root.layers) + len(layers.lowers),  # + frozen snapshot layers
            # unshifted layers: B bind-mounts each, id-mapped to the box's uids, on layer_links/<i>
            "idmap_layers": [] if spec.root.shifted else [str(p) for p in spec.root.layers],
            "upperdir": str(layers.top),
            "workdir": str(spec.layout.work),
            "volatile_upper": spec.volatile_upper,
            "ro_binds": sorted({_python_prefix(python), str(AGENT_PARENT)}),
            "volumes": volumes,
            "cap_mask": spec.cap_mask,
            "spawner_idle": idle,
            "resolv_conf": str(network.resolv_conf(spec.layout.resolv_conf)) if spec.network or spec.ports else None,
            "keeper": {
                "lock": str(lock),
                "pasta": pasta[0] if pasta else None,
                "net_gid": pasta[1] if pasta else None,
                "pasta_ports": bool(spec.ports),  # it holds host ports: gone before the box counts as stopped
                "dnsproxy": dnsproxy,
                "secretproxy": secretproxy,
                "secretproxy_netns": network.secret_fastpath(),
                "pasta_fifo": str(spec.layout.pasta_fifo),
                "pasta_pid": str(spec.layout.pasta_pid),
                "sysctls": network.NETNS_SYSCTLS,
                "netns_nft": _netns_nft(spec.ports) if pasta else None,
            },
        }
        if spec.disk_size_gb:  # the writable layer on a sized ext4 image (mkfs on first start only)
            disk = await asyncio.to_thread(quota.boot_config, spec.layout, spec.disk_size_gb, spec.root.uid_base)
            config.update(disk)
        log = os.open(spec.layout.boot_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fds = [status_w, log] + ([spec.lifeline_fd] if spec.lifeline_fd is not None else [])
        try:
            self._zygote(python).spawn(config, fds)
        except BaseException:
            os.close(status_r)
            groups.remove()
            raise
        finally:
            os.close(status_w)
            os.close(log)
        try:
            pid = await within(self._await_ready(status_r, spec), spec.ready_timeout)
        except BaseException as e:
            self._abort(groups)
            if isinstance(e, asyncio.TimeoutError):
                raise EngineError(
                    f"box {spec.box_id} was not ready after {spec.ready_timeout:g}s{self._boot_log_tail(spec)}"
                ) from None
            raise
        finally:
            os.close(status_r)
        start_time = process_start_time(pid)
        if start_time is None:
            raise EngineError(f"box {spec.box_id} died right after start{self._boot_log_tail(spec)}")
        return RunningBox(pid=pid, pid_start=start_time, agent_socket=spec.agent_socket)

    async def _await_ready(self, status_r: int, spec: BoxSpec) -> int:
        """PID 1's host pid once three processes reported on the status pipe: A (``pid``),
        PID 1 (``ready``: the agent serves) and the keeper (``keeper``: it holds the box, its
        pasta, if any, has configured the network). Raises on ``error``/``neterror`` or EOF."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=STATUS_LINE_MAX)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(os.dup(status_r), "rb", buffering=0)
        )
        pid, ready, kept = 0, False, False
        try:
            while not (pid and ready and kept):
                try:
                    status = parse_status(await reader.readline())
                except ValueError:  # a line over the limit
                    raise EngineError(f"box {spec.box_id} failed to start: status line too long") from None
                if status.word == STATUS_PID and status.arg.isdigit():
                    pid = int(status.arg)
                elif status.word == STATUS_READY:
                    ready = True
                elif status.word == STATUS_KEEPER:
                    kept = True
                elif status.word == STATUS_NET_ERROR:
                    raise NetworkError(f"pasta failed to set up the box network: {status.arg}")
                elif status.word == STATUS_ERROR:
                    raise EngineError(f"box {spec.box_id} failed to start: {status.arg}")
                elif not status.word:
                    raise EngineError(f"box {spec.box_id} failed to start{self._boot_log_tail(spec)}")
            return pid
        finally:
            transport.close()

    def _abort(self, groups: cgroups.BoxCgroups) -> None:
        for pid in groups_pids(groups):
            _kill(pid)
        groups.remove()

    def _zygote(self, python: str) -> Zygote:
        if self._zygotes.get(python) is None:
            self._zygotes[python] = Zygote(python, AGENT_PARENT)
        return self._zygotes[python]

    @staticmethod
    def _boot_log_tail(spec: BoxSpec, lines: int = 8) -> str:
        try:
            text = spec.layout.boot_log.read_text(errors="replace").strip()
        except OSError:
            return ""
        tail = "\n".join(text.splitlines()[-lines:])
        return f"; boot log:\n{tail}" if tail else ""

    def _prepare_dirs(self, spec: BoxSpec) -> diskchain.Chain:
        uid = spec.root.uid_base
        layout = spec.layout
        layers = diskchain.chain(spec.box_dir, self.name)
        for path in (layers.top, layout.work, layout.run_dir, layout.sup):
            path.mkdir(parents=True, exist_ok=True)
        upper = layers.top
        if upper.stat().st_uid != uid:
            bottom = spec.root.layers[0] if spec.root.layers else None
            os.chown(upper, uid, uid)
            os.chmod(upper, (bottom.stat().st_mode & 0o7777) if bottom else 0o755)
        os.chown(spec.run_dir, uid, uid)
        os.chmod(spec.run_dir, 0o700)
        sock = spec.agent_socket
        if sock.exists() or sock.is_symlink():
            sock.unlink()
        links = layout.layer_links
        shutil.rmtree(links, ignore_errors=True)
        links.mkdir()
        for i, layer in enumerate(spec.root.layers):
            if spec.root.shifted:  # an older store's layers: already owned by the box's uids
                os.symlink(layer, links / str(i))
            else:  # a mount point (in the box's mount namespace only)
                (links / str(i)).mkdir(mode=0o700)
        for i, frozen in enumerate(layers.lowers, len(spec.root.layers)):  # snapshots: owned by box uids
            os.symlink(frozen, links / str(i))
        return layers

    async def kill(self, spec: BoxSpec, running: RunningBox) -> None:
        if running.is_alive():
            _kill(running.pid)
        groups = cgroups.BoxCgroups.load(spec.layout.cgroups_file)
        if groups is not None and groups.freezer() is not None:
            with contextlib.suppress(EngineError):  # a paused box: a frozen task dies only once thawed
                groups.set_frozen(False)
        await running.wait_gone(5)
        await _keeper_done(spec.layout.keeper_lock)  # not cleanup's blocking wait: other boxes go on

    def cleanup(self, spec: BoxSpec) -> None:
        """Release what the box's keeper has not (it was killed, or still works: waited for)."""
        _await_keeper(spec.layout.keeper_lock)
        self._release(spec)

    def _release(self, spec: BoxSpec) -> None:
        """``cleanup`` once the keeper is done or was waited for (idempotent)."""
        network.stop_pasta(spec.layout.pasta_pid)
        allowlist.release(spec.box_dir)
        groups = cgroups.BoxCgroups.load(spec.layout.cgroups_file)
        if groups is not None:
            groups.remove()
            spec.layout.cgroups_file.unlink(missing_ok=True)
        for path in (spec.agent_socket,):
            path.unlink(missing_ok=True)

    async def freeze(self, spec: BoxSpec, running: RunningBox) -> None:
        """cgroup freezer: every box process stops where it is (memory kept). The keeper and
        pasta are outside the box's cgroups: published ports stay open (connections wait)."""
        groups = self._groups(spec)
        groups.set_frozen(True)
        deadline = time.monotonic() + FREEZE_TIMEOUT
        while not groups.is_frozen():
            if time.monotonic() > deadline:  # a task stuck in the kernel (D state): give up, undo
                groups.set_frozen(False)
                raise EngineError(f"box {spec.box_id}: its processes did not freeze within {FREEZE_TIMEOUT:g}s")
            await asyncio.sleep(0.001)
            if groups.version == 1:
                groups.set_frozen(True)  # v1: FREEZING may need the write again to finish

    async def thaw(self, spec: BoxSpec, running: RunningBox) -> None:
        self._groups(spec).set_frozen(False)

    def is_frozen(self, spec: BoxSpec) -> bool:
        groups = cgroups.BoxCgroups.load(spec.layout.cgroups_file)
        return groups is not None and groups.is_frozen()

    async def save(self, spec: BoxSpec, running: RunningBox) -> None:
        from .criu import refuse

        refuse()

    async def restore(self, spec: BoxSpec) -> RunningBox:
        from .criu import refuse

        refuse()

    def check_forkable(self, spec: BoxSpec) -> None:
        from .criu import refuse

        refuse("fork")

    @staticmethod
    def _groups(spec: BoxSpec) -> cgroups.BoxCgroups:
        groups = cgroups.BoxCgroups.load(spec.layout.cgroups_file)
        if groups is None:
            raise EngineError(f"box {spec.box_id} has no cgroups (is it running?)")
        return groups

    def metrics(self, spec: BoxSpec, running: RunningBox | None) -> dict[str, float]:
        groups = cgroups.BoxCgroups.load(spec.layout.cgroups_file)
        if groups is None:
            return {}
        from ..net import netcounters  # nft listings and the DNS proxy's file: metrics only

        net = network.add_fastpath_counters(netstats.read_counters(groups_pids(groups)), spec.box_dir)
        return {**groups.read(), **net, **netcounters.read(spec.box_dir)}


def _netns_nft(ports: list[tuple[str, int, int, str]]) -> list[str] | None:
    """[nft binary, rules] the keeper loads into the box's network namespace (UDP port moves)."""
    rules = network.udp_port_redirects(ports)
    return None if rules is None else [hostguard.nft_binary(), rules]


def groups_pids(groups: cgroups.BoxCgroups) -> list[int]:
    pids: set[int] = set()
    for procs in groups.procs_files:
        try:
            with open(procs) as f:
                pids.update(int(x) for x in f.read().split())
        except OSError:
            pass
    return sorted(pids)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _keeper_active(lock: Path) -> bool:
    """Does a keeper hold ``lock``? (An exclusive flock we could take means no.)"""
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


async def _keeper_done(lock: Path, timeout: float = KEEPER_WAIT) -> None:
    """``_await_keeper`` for the event loop. A keeper removes a killed box's cgroups about a
    millisecond after its PID 1 died, less than the loop's shortest sleep: the first
    ``KEEPER_SPIN`` s are waited in a worker thread that checks every 0.2 ms, the rest with the
    loop's 10 ms sleeps (a hung keeper holds no thread)."""
    if not _keeper_active(lock):
        return
    started = time.monotonic()
    try:
        if not await asyncio.to_thread(_await_keeper, lock, KEEPER_SPIN, 0.0002):
            return
    except RuntimeError:  # no worker threads any more (interpreter shutdown): the loop's sleeps only
        pass
    while _keeper_active(lock) and time.monotonic() - started < timeout:
        await asyncio.sleep(0.01)


def _await_keeper(lock: Path, timeout: float = KEEPER_WAIT, interval: float = 0.01) -> bool:
    """Return once no keeper holds ``lock`` (it has killed its pasta and removed its cgroups),
    or after ``timeout``; whether one still holds it."""
    deadline = time.monotonic() + timeout
    while (active := _keeper_active(lock)) and time.monotonic() < deadline:
        time.sleep(interval)
    return active
