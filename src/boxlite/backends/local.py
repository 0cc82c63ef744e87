"""``LocalBackend``: boxes of a ``BoxRuntime`` on this machine (no daemon: they are children of
this process, or detached and reattached by id)."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import shlex
import time
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from pathlib import Path
from typing import Any

from ..api.options import BoxOptions, ExportOptions, Options
from ..api.results import (
    BoxInfo,
    BoxMetrics,
    BoxStateInfo,
    HealthStatus,
    NetworkInfo,
    PublishedPort,
    RuntimeMetrics,
    SnapshotInfo,
    iso,
    masked_env,
)
from ..client.agent_client import AgentClient
from ..client.tunnel import ExecTunnel
from ..errors import BoxliteError, InvalidStateError, NotFoundError
from ..images import ImageConfig, ImageInfo, ImageManager, load_registries_from_config
from ..images.types import PullProgress
from ..layout import EXEC_LOG_NAME
from ..runtime import pause, snapshots
from ..runtime.home import Home
from ..runtime.lifecycle import BoxRuntime
from ..runtime.state import BoxRecord
from ..runtime.volumes import VolumeInfo, VolumeStore
from ..runtime.volumes import check_id as check_volume_id
from ..steplog import step
from .base import (
    Backend,
    ExecCounters,
    ExecRequest,
    ImagesBackend,
    StartedExec,
    TunnelStream,
    check_signal,
    wait_exit,
)
from .idle import IdleWatcher


class LocalImages(ImagesBackend):
    """The image store of this runtime's home."""

    def __init__(self, manager: ImageManager, core: BoxRuntime) -> None:
        self._m = manager
        self._core = core

    async def pull(self, reference: str, progress: Callable[[PullProgress], None] | None = None) -> ImageInfo:
        return await self._m.pull(reference, progress)

    async def list(self) -> builtins.list[ImageInfo]:
        return self._m.list()

    async def get(self, reference: str) -> ImageInfo | None:
        try:
            return self._m._lookup(reference)
        except BoxliteError:
            return None

    async def config(self, reference: str) -> ImageConfig:
        return (await self._m.resolve(image=reference)).config

    async def remove(self, reference: str, force: bool = False) -> None:
        self._m.remove(reference, force)

    async def load(self, path: str | Path) -> builtins.list[ImageInfo]:
        return self._m.load(path)

    async def gc(self) -> int:
        """Delete blobs and unpacked layers that no image and no box uses; returns bytes freed."""
        in_use = {Path(layer) for rec in self._core.db.all() for layer in rec.layers}
        return self._m.gc(in_use)


class LocalBackend(Backend):
    """A runtime home on this machine, driven through its ``BoxRuntime``."""

    def __init__(self, options: Options) -> None:
        self.home = Home.resolve(options.home_dir)
        registries = list(options.image_registries) + load_registries_from_config(self.home.root)
        self.image_manager = ImageManager(self.home.root, registries, uid_base=self.home.uid_base)
        engine = options.engine or self.home.config().get("engine")
        self.core = BoxRuntime(self.home, self.image_manager, engine)
        self.volume_store = VolumeStore(self.home.root)
        self._recs: dict[str, BoxRecord] = {}  # last record read per box (exec needs its options)
        self._unsaved: dict[str, ExecCounters] = {}  # box handles' counts not yet added to the home
        self._idle = IdleWatcher(self.pause, self._idle_limit)  # auto_pause
        snapshots.recover_exports(self.core)  # what a killed snapshot/clone/export/import left
        snapshots.recover(self.core)

    @property
    def images(self) -> LocalImages:
        return LocalImages(self.image_manager, self.core)

    @property
    def closed(self) -> bool:
        return self.core.closed

    def describe(self) -> str:
        return f"home={str(self.home.root)!r}, open={not self.core.closed}"

    def _record(self, id_or_name: str) -> BoxRecord:
        rec = self.core.record(id_or_name)
        self._recs[rec.id] = rec
        return rec

    # --- boxes ----------------------------------------------------------------------------
    async def create(self, options: BoxOptions, name: str | None, box_id: str | None = None) -> BoxInfo:
        with step("create", image=options.image, box_name=name) as fields:
            config = options.to_config()
            async with self.volume_store.using(config):  # a volume removal waits, then sees this box
                rec = await self.core.create(self.volume_store.resolve(config), name, box_id)
            fields["box"] = rec.id
        self._recs[rec.id] = rec
        return self._info(rec)

    async def get(self, id_or_name: str) -> BoxInfo | None:
        self.core.check_open()
        try:
            return self._info(self._record(id_or_name))
        except NotFoundError:
            return None

    def info(self, box_id: str) -> BoxInfo:
        return self._info(self._record(box_id))

    # --- named volumes -----------------------------------------------------------------------
    async def volume_create(self) -> VolumeInfo:
        self.core.check_open()
        return await asyncio.to_thread(self.volume_store.create)

    async def volume_list(self) -> builtins.list[VolumeInfo]:
        self.core.check_open()
        return await asyncio.to_thread(self.volume_store.list)

    async def volume_get(self, volume_id: str) -> VolumeInfo:
        self.core.check_open()
        return await asyncio.to_thread(self.volume_store.get, volume_id)

    async def volume_remove(self, volume_id: str, force: bool = False) -> None:
        """A volume a box still names is refused (InvalidStateError); with ``force`` it goes if
        those boxes are all stopped (they then fail to start), never under a live box."""
        self.core.check_open()
        check_volume_id(volume_id)
        # Under the exclusive lock: a box of any process of the home that is being created or
        # started with this volume holds it shared, so it is either seen here or starts after.
        async with self.volume_store.removing() as root:
            users = [rec for rec in self.core.db.all() if any(v.volume_id == volume_id for v in rec.config.volumes)]
            live = [rec.id for rec in users if self.core.refresh(rec).state not in ("configured", "stopped", "exited")]
            if live:
                raise InvalidStateError(f"volume {volume_id} is mounted by box(es) {', '.join(live)}: stop them first")
            if users and not force:
                names = ", ".join(rec.id for rec in users)
                raise InvalidStateError(
                    f"volume {volume_id} is used by box(es) {names}: remove them, or pass force=True"
                )
            await asyncio.to_thread(self.volume_store.remove_locked, root, volume_id, force)

    def _info(self, rec: BoxRecord) -> BoxInfo:
        return record_info(rec, self.core.health.view(rec))

    async def list(self, state: str | None = None) -> builtins.list[BoxInfo]:
        self.core.check_open()
        # Newest first, as BoxLite lists them.
        infos = [self._info(self.core.refresh(rec)) for rec in reversed(self.core.db.all())]
        return [i for i in infos if state is None or i.state.status == state]

    async def remove(self, id_or_name: str, force: bool = False) -> None:
        self.core.check_open()
        self._recs.pop(await self.core.remove(id_or_name, force), None)

    async def start(self, box_id: str, detach: bool | None = None) -> BoxInfo:
        if detach is not None:
            self.core.set_detach(box_id, bool(detach))
        with step("start", box=box_id):
            _, rec = await self.core.start(box_id)
        self._recs[rec.id] = rec
        info = self._info(rec)
        self._idle.touch(box_id, info.auto_pause)
        return info

    async def stop(self, box_id: str, timeout: float | None = None) -> None:
        try:
            with step("stop", box=box_id):
                await self.core.stop(box_id, timeout)
        finally:  # its record changed (or is gone, with auto_remove)
            self._recs.pop(box_id, None)

    async def pause(self, box_id: str, to_disk: bool = False) -> BoxInfo:
        try:
            return record_info(await pause.pause(self.core, box_id, to_disk))
        finally:
            self._recs.pop(box_id, None)

    async def fork(self, box_id: str, n: int = 1) -> builtins.list[BoxInfo]:
        from ..runtime import fork as forking  # imported by the verbs that need them, not on open

        return [record_info(rec) for rec in await forking.fork(self.core, box_id, n)]

    def _idle_limit(self, box_id: str) -> tuple[int, bool]:
        rec = self.core.record(box_id)
        return rec.config.auto_pause, rec.state == "running"

    async def exec_detached(self, box_id: str, request: ExecRequest) -> int:
        client, rec = await self._client(box_id)
        r = request
        body = self.core.exec_body(rec, r.argv, r.env, r.cwd, r.user, detach=True, log=EXEC_LOG_NAME, stdin=False)
        return (await client.exec(body, shlex.join(r.argv))).pid

    async def signal_main(self, box_id: str, signal: int) -> None:
        await self.core.signal_main(box_id, check_signal(signal))

    async def resume(self, box_id: str, detach: bool | None = None) -> BoxInfo:
        try:
            info = record_info(await pause.resume(self.core, box_id, detach))
            self._idle.touch(box_id, info.auto_pause)
            return info
        finally:
            self._recs.pop(box_id, None)

    # --- work -----------------------------------------------------------------------------
    async def _client(self, box_id: str) -> tuple[AgentClient, BoxRecord]:
        """The live agent connection and the box's record; starts the box if it is not running."""
        core = self.core
        client = core.clients.get(box_id)
        rec = self._recs.get(box_id)
        if client is None or client.closed or rec is None or rec.state != "running":
            core.check_open()
            rec = self._record(box_id)
            if rec.state == pause.PAUSED and pause.auto_resumes(rec):
                rec = await pause.resume(core, box_id)
            ended = core.main_exit(box_id) if rec.state in ("running", "exited") else None
            if ended is not None:  # starting it would run its main process again: not as a side effect
                raise InvalidStateError(
                    f"box {box_id} has exited (its main process ended with status {ended.exit_code}); "
                    "start it again explicitly (box.start(), 'boxlite start') to run it again"
                )
            with step("start", box=box_id):
                client, rec = await core.start(box_id)
            self._recs[rec.id] = rec
        return client, rec

    async def ready(self, box_id: str) -> None:
        await self._client(box_id)

    async def _exec(self, box_id: str, body: dict[str, Any], label: str) -> StartedExec:
        client, rec = await self._client(box_id)
        channel = await client.exec(body, label)
        channel.exit.add_done_callback(self._idle.begin(box_id, rec.config.auto_pause))
        return StartedExec(channel, f"{box_id}-{channel.channel}")

    async def exec(self, box_id: str, request: ExecRequest) -> StartedExec:
        with step("exec", box=box_id, command=request.command) as fields:  # until the command runs
            client, rec = await self._client(box_id)
            r = request
            body = self.core.exec_body(
                rec, r.argv, r.env, r.cwd, r.user,
                tty=bool(r.tty), rows=r.rows, cols=r.cols, timeout=r.timeout_secs, stdin=r.stdin,
            )  # fmt: skip
            channel = await client.exec(body, shlex.join(r.argv))
            fields["pid"] = channel.pid
        channel.exit.add_done_callback(self._idle.begin(box_id, rec.config.auto_pause))
        return StartedExec(channel, f"{box_id}-{channel.channel}")

    async def copy_in(
        self, box_id: str, chunks: AsyncIterable[bytes], dest: str, name: str, include_parent: bool,
        overwrite: bool = True,
    ) -> None:  # fmt: skip
        args = {"dest": dest, "name": name, "into": include_parent, "overwrite": overwrite}
        channel = (await self._exec(box_id, {"builtin": "untar", "builtin_args": args}, f"copy_in {dest}")).channel
        errors = asyncio.ensure_future(channel.stderr.read_all())
        try:
            async for chunk in chunks:
                if chunk:
                    await channel.write_stdin(chunk)
            await channel.close_stdin()
        except BaseException:
            await channel.control({"op": "kill"})
            raise
        finally:
            status = await wait_exit(channel)
            message = _text(await errors)
        if status.exit_code != 0:
            raise BoxliteError(f"copy_in to {dest} failed: {message or status.error_message}")

    async def copy_out(self, box_id: str, src: str, name: str, follow_symlinks: bool) -> AsyncGenerator[bytes, None]:
        args = {"src": src, "name": name, "follow_symlinks": follow_symlinks}
        body = {"builtin": "tar", "builtin_args": args, "stdin": False}
        channel = (await self._exec(box_id, body, f"copy_out {src}")).channel
        errors = asyncio.ensure_future(channel.stderr.read_all())
        try:
            first = await channel.stdout.read()
            if first is not None:
                yield first
                while (chunk := await channel.stdout.read()) is not None:
                    yield chunk
        except BaseException:  # the consumer gave up (a limit, an unsafe entry, cancelled): stop the tar
            with contextlib.suppress(BoxliteError):
                await channel.control({"op": "kill"})
            raise
        status = await wait_exit(channel)
        if first is None:  # nothing at all: the builtin failed before writing
            message = _text(await errors)
            if status.exit_code == 2 and "no such file" in message:
                raise NotFoundError(f"no such file or directory in box: {src}")
            raise BoxliteError(f"copy_out of {src} failed: {message or status.error_message}")
        if status.exit_code != 0:
            message = _text(await errors)
            raise BoxliteError(f"copy_out of {src} failed: {message or status.error_message}")

    async def tunnel(self, box_id: str, port: int, window: int) -> TunnelStream:
        body = {"builtin": "connect", "builtin_args": {"port": port}, "window": window}
        client, rec = await self._client(box_id)
        channel = await client.exec(body, f"tunnel {port}")
        channel.exit.add_done_callback(self._idle.begin(box_id, rec.config.auto_pause))
        return await ExecTunnel.open(channel, port)

    # --- disk state: snapshots, clones, archives ------------------------------------------
    async def snapshot_create(self, box_id: str, name: str) -> SnapshotInfo:
        return _snapshot_info(await snapshots.create(self.core, box_id, name), self._record(box_id).engine)

    async def snapshot_list(self, box_id: str) -> builtins.list[SnapshotInfo]:
        engine = self._record(box_id).engine
        return [_snapshot_info(s, engine) for s in await snapshots.list_snapshots(self.core, box_id)]

    async def snapshot_restore(self, box_id: str, name: str) -> None:
        await snapshots.restore(self.core, box_id, name)

    async def snapshot_remove(self, box_id: str, name: str) -> None:
        await snapshots.remove(self.core, box_id, name)

    async def clone(self, box_id: str, name: str | None) -> BoxInfo:
        rec = await snapshots.clone(self.core, box_id, name)
        return self._info(self._record(rec.id))

    async def export(self, box_id: str, dest: str, options: ExportOptions) -> str:
        from ..runtime import archive

        request = archive.ExportRequest(dest, options.include_image, options.compression, options.max_bytes)
        return str(await archive.export(self.core, box_id, request))

    async def import_box(
        self, archive_path: str, name: str | None, untrusted: bool = False, engine: str | None = None
    ) -> BoxInfo:
        from ..runtime import archive

        rec = await archive.import_box(self.core, archive_path, name, trusted=not untrusted, engine=engine)
        return self._info(self._record(rec.id))

    # --- metrics and shutdown -------------------------------------------------------------
    async def box_metrics(self, box_id: str, counted: ExecCounters) -> BoxMetrics:
        rec = self._record(box_id)
        core = self.core
        raw = core.engine_for(rec).metrics(core.spec(rec), None) if rec.state in ("running", "paused") else {}
        cpu_ns = raw.get("cpu_usage_ns")
        cpu_percent = None
        if cpu_ns is not None and rec.started_at:
            wall = max(time.time() - rec.started_at, 1e-3)
            cpu_percent = round(cpu_ns / 1e9 / wall * 100, 2)
        totals = self._box_totals(rec.id)  # the box's, not only this handle's (``counted``)
        return BoxMetrics(
            commands_executed_total=totals.commands,
            exec_errors_total=totals.errors,
            bytes_sent_total=totals.bytes_sent,
            bytes_received_total=totals.bytes_received,
            total_create_duration_ms=rec.boot_ms,
            guest_boot_duration_ms=rec.boot_ms,
            cpu_percent=cpu_percent,
            cpu_time_ms=None if cpu_ns is None else cpu_ns / 1e6,
            memory_bytes=_int(raw.get("memory_bytes")),
            memory_peak_bytes=_int(raw.get("memory_peak_bytes")),
            pids=_int(raw.get("pids")),
            extra={k: v for k, v in raw.items() if k not in ("memory_bytes", "memory_peak_bytes", "pids", *_NET)},
            network_bytes_sent=_int(raw.get("net_bytes_sent")),
            network_bytes_received=_int(raw.get("net_bytes_received")),
            network_tcp_connections=_int(raw.get("net_tcp_connections")),
            network_tcp_errors=_int(raw.get("net_tcp_errors")),
            network_packets_sent=_int(raw.get("net_packets_sent")),
            network_packets_received=_int(raw.get("net_packets_received")),
            network_connections_refused=_int(raw.get("net_connections_refused")),
            network_dns_refused=_int(raw.get("net_dns_refused")),
        )

    async def metrics(self, counted: ExecCounters) -> RuntimeMetrics:
        counters = self.core.db.counters()
        running = sum(1 for rec in self.core.db.all() if self.core.refresh(rec).state == "running")
        return RuntimeMetrics(
            boxes_created_total=counters.get("boxes_created_total", 0),
            boxes_failed_total=counters.get("boxes_failed_total", 0),
            num_running_boxes=running,
            total_commands_executed=counted.commands,
            total_exec_errors=counted.errors,
        )

    async def shutdown(self, timeout: float | None = None) -> None:
        await self._idle.close()
        self._save_counts()
        await self.core.shutdown(timeout)

    # --- per-box counters, kept in the home across processes (`boxlite exec` then `stats`) --
    def count(self, box_id: str, commands: int = 0, errors: int = 0, sent: int = 0, received: int = 0) -> None:
        c = self._unsaved.setdefault(box_id, ExecCounters())
        c.commands, c.errors = c.commands + commands, c.errors + errors
        c.bytes_sent, c.bytes_received = c.bytes_sent + sent, c.bytes_received + received

    def _save_counts(self) -> None:
        """Add what this process counted to the home's counters (one row per box and counter)."""
        unsaved, self._unsaved = self._unsaved, {}
        if self.core.closed:
            return
        for box_id, c in unsaved.items():
            for field, value in _counter_fields(c):
                if value:
                    self.core.db.bump(f"box:{box_id}:{field}", value)

    def _box_totals(self, box_id: str) -> ExecCounters:
        """The box's counters over every process of this home (saved ones plus this one's)."""
        self._save_counts()
        saved = self.core.db.counters()
        return ExecCounters(*(saved.get(f"box:{box_id}:{field}", 0) for field, _ in _counter_fields(ExecCounters())))


def _counter_fields(c: ExecCounters) -> tuple[tuple[str, int], ...]:
    return (("commands", c.commands), ("errors", c.errors), ("bytes_sent", c.bytes_sent),
            ("bytes_received", c.bytes_received))  # fmt: skip


_NET = ("net_bytes_sent", "net_bytes_received", "net_tcp_connections", "net_tcp_errors", "net_packets_sent",
        "net_packets_received", "net_connections_refused", "net_dns_refused")  # fmt: skip
"""Engine metrics that are BoxMetrics.network_* (the namespace engine measures them)."""


def _snapshot_info(s: snapshots.Snapshot, engine: str) -> SnapshotInfo:
    disk = {"guest_disk_bytes" if engine == "vm" else "container_disk_bytes": s.size_bytes}
    return SnapshotInfo(id=s.id, box_id=s.box_id, name=s.name, created_at=s.created_at, size_bytes=s.size_bytes, **disk)


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace").strip()


def record_info(rec: BoxRecord, health: dict[str, Any] | None = None) -> BoxInfo:
    """The public view of a box's record (``health``: its health status, runtime/health.py)."""
    return BoxInfo(
        id=rec.id,
        name=rec.name,
        state=BoxStateInfo(
            status=rec.state,
            running=rec.state == "running",
            pid=rec.pid,
            exit_code=rec.exit_code if rec.state == "exited" else None,
            finished_at=iso(rec.finished_at) if rec.state == "exited" else None,
        ),
        created_at=iso(rec.created_at) or "",
        started_at=iso(rec.started_at),
        image=rec.image,
        cpus=rec.config.cpus,
        memory_mib=rec.config.memory_mib,
        engine=rec.engine,
        detach=rec.detach,
        auto_remove=rec.auto_remove,
        image_config=rec.image_config.to_json(),
        network=NetworkInfo(
            "enabled" if rec.config.network else "disabled",
            allow_net=list(rec.config.allow_net),
            public_only=rec.config.public_only,
            published_ports=[PublishedPort(p.guest_port, p.host_ip, p.host_port, p.protocol) for p in rec.config.ports],
        ),
        auto_delete=1 if rec.auto_remove else 0,
        auto_pause=rec.config.auto_pause,
        auto_resume=rec.config.auto_resume,
        health_status=HealthStatus() if health is None else HealthStatus(**health),
        command=BoxRuntime.main_command(rec) or None,
        env=masked_env([*(_pair(e) for e in rec.image_config.env or ()), *rec.config.env]),
    )


def _pair(item: str) -> tuple[str, str]:
    """``KEY=VALUE`` (the image config's env form) as a pair."""
    key, _, value = item.partition("=")
    return key, value


__all__ = ["LocalBackend", "LocalImages", "record_info"]
