"""Create, start, stop and remove boxes; recover from crashed processes. Engine-agnostic."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..agent import mainexit
from ..client.agent_client import AgentClient
from ..engines.base import BoxSpec, Engine, RootLayers, RunningBox, process_start_time
from ..engines.namespace import quota
from ..errors import (
    AlreadyExistsError,
    BoxDiedError,
    ConfigError,
    EngineError,
    ExecError,
    InvalidStateError,
    NotFoundError,
    StoppedError,
    UnsupportedOptionError,
)
from ..images import ImageManager
from ..images.types import is_live_rootfs
from ..layout import MAIN_LOG_NAME, BoxLayout
from . import capabilities, reach
from .config import BoxConfig, ImageDefaults, check_argv, check_stop_timeout, env_to_dict
from .engines import select_engine
from .health import HealthMonitor
from .home import Home
from .locks import box_lock, try_box_lock
from .pause import release as release_paused
from .state import BoxRecord, StateDB, now
from .trash import Trash
from .volumes import VolumeStore

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BOX_ID_LENGTH = 12
DEFAULT_STOP_TIMEOUT = 10.0
SHUTDOWN_FLUSH = 10.0
"""Seconds beyond the grace the agent gets to answer ``shutdown``: it answers once the box's
processes are gone and a VM's disk is synced (a hostile agent delays a stop by this much)."""
DEFAULT_READY_TIMEOUT = 60.0


DEFAULT_IMAGE_NAME = "debian-python (default)"


def default_rootfs(home: Home) -> Path:
    """The default image: busybox + python3 from Debian packages, built once per home (offline
    apart from Debian's package mirror, so a first box needs no container registry)."""
    from ..images.debian import ensure_debian_rootfs

    return ensure_debian_rootfs(home.root / "images" / "debian")


def _drop_lifeline_in_forked_children(rt: BoxRuntime) -> None:
    """Close the lifeline's write end in processes forked (without exec) from this one: the
    boxes' lifeline is this process, not a multiprocessing worker that may outlive it."""
    ref = weakref.ref(rt)

    def after_in_child() -> None:
        runtime = ref()
        if runtime is not None and runtime.lifeline_w >= 0:
            with contextlib.suppress(OSError):
                os.close(runtime.lifeline_w)
            runtime.lifeline_w = -1

    os.register_at_fork(after_in_child=after_in_child)


def new_box_id() -> str:
    """12 random base62 characters (71 bits), the form and length of BoxLite's box ids."""
    return "".join(secrets.choice(_BASE62) for _ in range(BOX_ID_LENGTH))


class BoxRuntime:
    """The state machine behind the public API, shared by every ``Box`` of one runtime."""

    def __init__(self, home: Home, images: ImageManager, default_engine: str | None = None) -> None:
        self.home = home
        self.images = images
        self.db = StateDB(home.db_path)
        self.default_engine = default_engine or os.environ.get("BOXLITE_ENGINE") or "auto"
        self.lifeline_r, self.lifeline_w = os.pipe()
        _drop_lifeline_in_forked_children(self)
        self.clients: dict[str, AgentClient] = {}
        self.owned: set[str] = set()
        self.health = HealthMonitor(self)
        self.closed = False
        self._pid = os.getpid()
        self._pid_start = process_start_time(self._pid)
        self.trash = Trash(home.root / "trash")
        self.trash.sweep()
        self.sweep()

    # --- records ------------------------------------------------------------------------
    def layout(self, box_id: str) -> BoxLayout:
        return self.home.layout(box_id)

    def check_open(self) -> None:
        if self.closed:
            raise StoppedError("this runtime was shut down")

    def record(self, id_or_name: str, locked: bool = False) -> BoxRecord:
        rec = self.db.get(id_or_name)
        if rec is None:
            raise NotFoundError(f"no box with id or name {id_or_name!r}")
        return self.refresh(rec, locked)

    def refresh(self, rec: BoxRecord, locked: bool = False) -> BoxRecord:
        """Correct a 'running' record whose supervisor is gone (its main process ended, a
        crash, a kill, a host reboot) and release the box's host resources (cgroups...).
        ``locked``: the caller holds the box lock.

        Without the lock the record is corrected only if the lock is free; otherwise whoever
        holds it (maybe starting the box again) writes the state, and ``rec`` is only reported
        ended: cleaning up then could kill the box being started."""
        if rec.state not in ("running", "stopping", "paused") or self._alive(rec) or rec.paused_to_disk:
            return rec
        if locked:
            self._mark_ended(rec)
            return rec
        with try_box_lock(self.layout(rec.id).lock) as taken:
            fresh = self.db.get(rec.id) if taken else None
            if fresh is not None and fresh.state in ("running", "stopping", "paused") and not self._alive(fresh):
                self._mark_ended(fresh)
            if fresh is not None:
                rec.__dict__.update(fresh.__dict__)
                return rec
        self._set_ended(rec, rec.state in ("running", "paused"))
        return rec

    def _set_ended(self, rec: BoxRecord, main_may_have_ended: bool) -> None:
        """``rec`` is no longer running: "exited" (with the status) if its main process ended
        by itself (the box's supervisor recorded it in ``run/main.exit``), else "stopped"."""
        ended = self.main_exit(rec.id) if main_may_have_ended else None
        rec.state = "stopped" if ended is None else "exited"
        if ended is not None:
            rec.exit_code, rec.finished_at, rec.oom_killed = ended.exit_code, ended.finished_at, ended.oom_killed
        rec.pid = rec.pid_start = None
        rec.paused_to_disk, rec.paused_at = False, None

    def _mark_ended(self, rec: BoxRecord) -> None:
        self._set_ended(rec, rec.state in ("running", "paused"))
        self.db.update(rec)
        with contextlib.suppress(Exception):
            select_engine(rec.engine).cleanup(self.spec(rec))
        self.owned.discard(rec.id)

    @staticmethod
    def _alive(rec: BoxRecord) -> bool:
        return rec.pid is not None and process_start_time(rec.pid) == rec.pid_start

    def sweep(self) -> None:
        """Crash recovery: stop boxes whose owner died, clean their host resources."""
        for rec in self.db.all():
            owner_alive = rec.owner_pid is not None and process_start_time(rec.owner_pid) == rec.owner_start
            live = rec.state in ("running", "stopping", "paused")
            if live and self._alive(rec) and not rec.detach and not owner_alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(rec.pid or 0, 9)
                deadline = time.monotonic() + 2
                while self._alive(rec) and time.monotonic() < deadline:
                    time.sleep(0.005)
            before = rec.state
            self.refresh(rec)  # marks it stopped and cleans up, unless another process holds it
            fresh = self.db.get(rec.id)
            transitioned = (
                before in ("running", "stopping", "paused")
                and fresh is not None
                and fresh.state in ("stopped", "exited")
            )
            if transitioned and rec.auto_remove and not owner_alive:
                self._delete(rec)

    # --- create -------------------------------------------------------------------------
    async def create(self, config: BoxConfig, name: str | None, box_id: str | None = None) -> BoxRecord:
        """A new box in state "configured" (its image resolved, pulled if needed). ``box_id``: the id
        a cluster driver chose for a box it placed before creating it (else a new one)."""
        self.check_open()
        config = reach.for_caller(config)
        if box_id is not None and (len(box_id) != BOX_ID_LENGTH or any(c not in _BASE62 for c in box_id)):
            raise ConfigError(f"invalid box id {box_id!r}")
        if box_id is not None and self.db.get(box_id) is not None:
            raise AlreadyExistsError(f"a box {box_id!r} already exists")
        if name is not None and (
            name in ("", ".", "..") or "/" in name or len(name) > 128 or any(ord(c) < 32 or ord(c) == 127 for c in name)
        ):  # names become paths and terminal output: no dot names, no control characters (NUL)
            raise ConfigError(f"invalid box name {name!r}")
        if name is not None and self.db.get(name) is not None:
            raise AlreadyExistsError(f"a box named {name!r} already exists")
        chosen = select_engine(config.engine or self.default_engine, str(self.home.root))
        engine = chosen.name
        if config.volumes and engine == "vm" and os.geteuid() != 0:
            raise UnsupportedOptionError("volumes", "volumes of vm boxes need root (virtiofsd); use engine='namespace'")
        if config.disk_size_gb is not None and engine == "namespace" and (why := quota.unsupported_reason()):
            raise UnsupportedOptionError("disk_size_gb", why)
        if engine == "vm" and any(p.ipv6 for p in config.ports):
            raise UnsupportedOptionError("ports", "the vm engine publishes ports on IPv4 host addresses only")
        capabilities.check_engine(config.capabilities[0], engine, config.volumes)
        rootfs_path = config.rootfs_path
        if config.image is None and rootfs_path is None:
            rootfs_path = str(await asyncio.to_thread(default_rootfs, self.home))
        prepared = await self.images.resolve(
            image=None if rootfs_path else config.image, rootfs_path=rootfs_path, live_rootfs=chosen.live_rootfs
        )
        cfg = prepared.config
        rec = BoxRecord(
            id=box_id or new_box_id(),
            name=name,
            state="configured",
            engine=engine,
            created_at=now(),
            image=str(config.rootfs_path or config.image or DEFAULT_IMAGE_NAME),
            image_id=prepared.image_id,
            layers=[str(p) for p in prepared.layers],
            uid_base=self.images.uid_base,
            config=config,
            image_config=ImageDefaults(
                env=tuple(cfg.env),
                working_dir=cfg.working_dir,
                user=cfg.user,
                entrypoint=None if cfg.entrypoint is None else tuple(cfg.entrypoint),
                cmd=None if cfg.cmd is None else tuple(cfg.cmd),
            ),
        )
        self.layout(rec.id).root.mkdir(parents=True)
        self.db.insert(rec)
        self.db.bump("boxes_created_total")
        return rec

    # --- start / stop -------------------------------------------------------------------
    def spec(self, rec: BoxRecord) -> BoxSpec:
        config = rec.config
        return BoxSpec(
            box_id=rec.id,
            box_dir=self.layout(rec.id).root,
            root=RootLayers(
                tuple(Path(p) for p in rec.layers),
                rec.image_id,
                rec.uid_base,
                # a live rootfs directory is the user's: never an older store's shifted layer
                shifted=not is_live_rootfs(rec.image_id) and self.images.layers_shifted([Path(p) for p in rec.layers]),
            ),
            hostname=config.hostname or (rec.name or rec.id[-12:]).lower()[:63],
            cache_dir=self.home.cache_dir,
            cpus=config.cpus,
            memory_mib=config.memory_mib,
            pids_limit=config.pids_limit,
            disk_size_gb=config.disk_size_gb,
            detach=rec.detach,
            lifeline_fd=None if rec.detach else self.lifeline_r,
            volumes=[(v.host_path, v.guest_path, v.read_only) for v in config.volumes],
            network=config.network,
            allow_net=config.allow_net,
            public_only=config.public_only,
            secrets=[s.to_json() for s in config.secrets],
            ports=[(p.host_ip, p.host_port, p.guest_port, p.protocol) for p in config.ports],
            ready_timeout=config.ready_timeout or DEFAULT_READY_TIMEOUT,
            cap_mask=capabilities.mask(capabilities.box_set(*config.capabilities, rec.engine, config.volumes)),
            volatile_upper=rec.auto_remove,
        )

    async def start(self, box_id: str) -> tuple[AgentClient, BoxRecord]:
        """Start the box if needed (idempotent): a live agent connection, and the box's record
        as stored once running."""
        self.check_open()
        async with box_lock(self.layout(box_id).lock):
            rec = self.record(box_id, locked=True)
            if rec.state == "paused":
                raise InvalidStateError(f"box {rec.id} is paused; resume it first (box.resume(), 'boxlite resume')")
            if rec.state == "running":
                if self.main_exit(rec.id) is None:
                    return await self.client(rec), rec
                await self._stop_running(rec, DEFAULT_STOP_TIMEOUT)  # its main process ended: start anew
            try:
                await self._start_engine(rec)
            except BaseException:
                self.db.bump("boxes_failed_total")
                if rec.auto_remove:  # nothing of a box that never ran is worth keeping
                    self._delete(rec)
                raise
            client = await self.client(rec)
            main = self.main_command(rec)
            if main:
                body = self.exec_body(rec, main, detach=True, log=MAIN_LOG_NAME, main=True)
                try:
                    await client.exec(body, " ".join(main))
                except ExecError as e:  # it cannot even start: the box ends with it
                    await self._main_failed(rec, e.exit_code)
                    raise
            self.health.begin(rec)  # no-op without a health check
            return client, rec

    async def _start_engine(self, rec: BoxRecord) -> RunningBox:
        """Boot the box's supervisor; the record becomes "running"."""
        engine = select_engine(rec.engine)
        spec = self.spec(rec)
        for layer in spec.root.layers:
            if not layer.is_dir():
                what = "rootfs directory" if is_live_rootfs(rec.image_id) else "layer"
                raise EngineError(f"{what} {layer} of box {rec.id} is missing (removed?)")
        async with VolumeStore(self.home.root).using(rec.config):  # a volume removal waits, then sees it running
            for volume in rec.config.volumes:  # checked at each start, as BoxLite does
                if volume.volume_id and not os.path.isdir(volume.host_path):
                    raise NotFoundError(f"volume {volume.volume_id} (mounted at {volume.guest_path}) was removed")
                if not os.path.exists(volume.host_path):
                    raise ConfigError(f"volume host path {volume.host_path} does not exist")
            mainexit.clear(str(spec.run_dir))
            await self._drop_client(rec.id)  # a connection to the previous supervisor may linger
            t0 = time.monotonic()
            running = await engine.start(spec)
            rec.state = "running"
            rec.pid, rec.pid_start = running.pid, running.pid_start
            rec.started_at = now()
            rec.exit_code = rec.finished_at = None
            rec.oom_killed = False
            rec.owner_pid, rec.owner_start = self._pid, self._pid_start
            rec.boot_ms = (time.monotonic() - t0) * 1000
            self.db.update(rec)
        if not rec.detach:
            self.owned.add(rec.id)
        return running

    async def _main_failed(self, rec: BoxRecord, status: int) -> None:
        """The main process could not start (``status`` 126/127): stop the box, which is then
        "exited" with that status (removed with ``auto_remove``)."""
        await self._stop_running(rec, 0.0)
        rec.state, rec.exit_code, rec.finished_at = "exited", status, now()
        self.db.update(rec)
        if rec.auto_remove:
            self._delete(rec)

    def main_exit(self, box_id: str) -> mainexit.MainExit | None:
        """How the box's main process ended, once it did (the box then stops by itself)."""
        return mainexit.read(str(self.layout(box_id).run_dir))

    @staticmethod
    def main_command(rec: BoxRecord) -> list[str]:
        """The box's main process: BoxOptions entrypoint + cmd (image defaults fill the part not
        given). Boxes without an explicit entrypoint or cmd have none: they idle for exec."""
        config, image = rec.config, rec.image_config
        if config.entrypoint is None and config.cmd is None:
            return []
        entrypoint = config.entrypoint if config.entrypoint is not None else image.entrypoint or ()
        if config.cmd is not None:
            return [*entrypoint, *config.cmd]
        cmd = (image.cmd or ()) if config.entrypoint is None else ()
        return [*entrypoint, *cmd]

    @staticmethod
    def exec_body(rec: BoxRecord, argv: list[str], env: Mapping[str, str] | Sequence[Any] | None = None,
                  cwd: str | None = None, user: str | None = None, **extra: Any) -> dict[str, Any]:  # fmt: skip
        """An ``exec`` request: image defaults, then box options, then the call's own values."""
        argv = check_argv(argv)
        image, config = rec.image_config, rec.config
        full_env = env_to_dict(image.env, "image env")
        full_env.update(config.env)
        full_env.update(env_to_dict(env, "env"))
        return {
            "argv": argv,
            "env": full_env,
            "cwd": cwd or config.working_dir or image.working_dir or None,
            "user": user or config.user or image.user or None,
            **({"rlimits": dict(config.rlimits)} if config.rlimits else {}),
            **extra,
        }

    def set_detach(self, box_id: str, detach: bool) -> None:
        """Change a stopped box's detach flag (a running box keeps the one it started with)."""
        rec = self.record(box_id)
        if rec.detach != detach and rec.state != "running":
            rec.detach = detach
            self.db.update(rec)

    async def client(self, rec: BoxRecord) -> AgentClient:
        if rec.state != "running":
            raise InvalidStateError(f"box {rec.id} is {rec.state}, not running")
        return await self._connect(rec.id)

    async def _connect(self, box_id: str) -> AgentClient:
        cl = self.clients.get(box_id)
        if cl is not None and not cl.closed:
            return cl
        cl = await AgentClient.connect(self.layout(box_id).agent_socket, label=f"box {box_id}")
        self.clients[box_id] = cl
        return cl

    async def signal_main(self, box_id: str, sig: int) -> None:
        """``sig`` to the box's main process (``boxlite kill -s SIG``), through its agent, which
        knows the process (``signal_main``, docs/protocol.md); the box itself is left as it is."""
        rec = self.record(box_id)
        if rec.state == "paused":
            raise InvalidStateError(f"box {rec.id} is paused; resume it first (box.resume(), 'boxlite resume')")
        reply = await (await self.client(rec)).request("signal_main", signal=int(sig))
        if not reply.get("sent"):
            raise InvalidStateError(f"box {rec.id} has no running main process")

    async def stop(self, box_id: str, timeout: float | None = None, remove_if_auto: bool = True) -> None:
        check_stop_timeout(timeout)
        grace = DEFAULT_STOP_TIMEOUT if timeout is None else (1e9 if timeout < 0 else min(float(timeout), 1e9))
        if grace == 0:
            await self._hurry_stop(box_id)
        async with box_lock(self.layout(box_id).lock):
            rec = self.record(box_id, locked=True)
            live = rec.state in ("running", "stopping") or (rec.state == "paused" and await release_paused(self, rec))
            discard = remove_if_auto and rec.auto_remove
            if live:
                await self._stop_running(rec, grace, discard)
            if discard:
                self._delete(rec, cleaned=live)

    async def _stop_running(self, rec: BoxRecord, grace: float, discard: bool = False) -> None:
        """Stop the box's processes (``grace`` seconds after a SIGTERM). ``discard``: the box is
        deleted right after, so its disk need not be flushed first."""
        await self.health.end(rec)
        engine = select_engine(rec.engine)
        spec = self.spec(rec)
        # A kill loses nothing of a box deleted right after (a VM's disk goes with it), except
        # what a VM guest holds unwritten for a volume (shared mappings of its files).
        disk_discarded = discard and not spec.volumes
        kill_is_enough = engine.kill_loses_nothing or disk_discarded
        running = RunningBox(rec.pid or 0, rec.pid_start or 0, spec.agent_socket)
        rec.state = "stopping"
        self.db.update(rec)
        if grace > 0 or not kill_is_enough:  # else the kill below does the same, a round trip sooner
            with contextlib.suppress(BoxDiedError, asyncio.TimeoutError, Exception):
                cl = await self._connect(rec.id)
                await cl.request("shutdown", timeout=grace + SHUTDOWN_FLUSH, grace=grace, sync=not disk_discarded)
        # Once the agent answered, every box process is gone: a VM whose disk is discarded needs
        # no orderly power-off (its guest would sync and unmount that disk first).
        if grace > 0 and (engine.kill_loses_nothing or not disk_discarded):
            await running.wait_gone(grace)
        await engine.kill(spec, running)
        engine.cleanup(spec)
        await self._drop_client(rec.id)
        self._set_ended(rec, True)  # "exited" if the main process had ended by itself before
        self.db.update(rec)
        self.owned.discard(rec.id)

    async def _hurry_stop(self, box_id: str) -> None:
        """A kill or a forced removal does not wait out the grace of a stop in progress (which
        holds the box's lock for as long as its caller asked, without limit if negative): the
        box's processes are killed now, as ``docker kill`` ends a ``docker stop`` under way; that
        stop then ends at once and the caller gets the lock."""
        with try_box_lock(self.layout(box_id).lock) as free:
            if free:
                return
        rec = self.db.get(box_id)
        if rec is None or rec.state != "stopping":  # only a stop writes it, under the lock
            return
        spec = self.spec(rec)
        with contextlib.suppress(EngineError):  # the stop's own kill reports it
            await select_engine(rec.engine).kill(spec, RunningBox(rec.pid or 0, rec.pid_start or 0, spec.agent_socket))

    async def _drop_client(self, box_id: str) -> None:
        cl = self.clients.pop(box_id, None)
        if cl is not None:
            await cl.close()

    async def remove(self, id_or_name: str, force: bool = False) -> str:
        """Remove the box (stopped first with ``force``); its id."""
        rec = self.record(id_or_name)
        if force:
            await self._hurry_stop(rec.id)
        async with box_lock(self.layout(rec.id).lock):
            rec = self.record(rec.id, locked=True)
            cleaned = False
            if rec.state in ("running", "stopping", "paused"):
                if not force:
                    raise InvalidStateError(f"box {rec.id} is {rec.state}; stop it first or pass force=True")
                if rec.state != "paused" or await release_paused(self, rec):
                    await self._stop_running(rec, 0.0, discard=True)
                    cleaned = True
            self._delete(rec, cleaned=cleaned)
        return rec.id

    def _delete(self, rec: BoxRecord, cleaned: bool = False) -> None:
        """``cleaned``: ``_stop_running`` has just released the box's host resources."""
        if not cleaned:
            with contextlib.suppress(Exception):
                select_engine(rec.engine).cleanup(self.spec(rec))
        self.trash.discard(self.layout(rec.id).root)  # gone now, emptied in the background
        self.db.delete(rec.id)
        self.clients.pop(rec.id, None)
        self.owned.discard(rec.id)

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop every non-detached box this runtime started, then refuse new work."""
        if self.closed:
            return
        await asyncio.gather(*(self.stop(box_id, timeout) for box_id in list(self.owned)), return_exceptions=True)
        await self.health.close()  # detached boxes it started: their checks end here
        for box_id in list(self.clients):
            await self._drop_client(box_id)
        self.closed = True
        for fd in (self.lifeline_w, self.lifeline_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        # -1: a later fork's handler (_drop_lifeline_in_forked_children) must not close whatever
        # file took these numbers since, e.g. a multiprocessing worker's pipe
        self.lifeline_w = self.lifeline_r = -1
        self.db.close()
        await asyncio.to_thread(self.trash.wait, 60.0)  # removed boxes are gone from the disk too

    def engine_for(self, rec: BoxRecord) -> Engine:
        return select_engine(rec.engine)
