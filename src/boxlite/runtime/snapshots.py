"""Disk snapshots and clones of boxes, both engines (the layer chain: ``engines.diskchain``).

* ``create``: the box's writable layer is frozen and an empty one goes on top: a rename of
  nothing, one new directory or one ``qemu-img create`` (cost independent of what the box
  wrote). A layer that is still empty is not frozen twice: the snapshot names the layer under it.
* ``restore``: a new empty writable layer on the snapshot's frozen layer; the old one is
  garbage. Only for a box that is not running (``InvalidStateError``, nothing changed).
* ``remove``: the name goes; layers nothing names any more are deleted.
* ``clone``: a stopped source is frozen (as above) and the new box gets hard links of its
  frozen layers (they are never written again: shared inodes are safe) and an empty writable
  layer. A running source is frozen (cgroup freezer / QEMU stop) while its writable layer is
  copied, then continues.

Crash safety: every change commits with one atomic replace of ``snap/state.json``; a new box
is built under ``boxes/.partial-<id>`` and renamed into place before its record is inserted.
:func:`recover` (run when a runtime opens its home) deletes what a killed process left.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import stat
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..aio import within
from ..engines import diskchain
from ..engines.base import RunningBox, process_start_time
from ..engines.diskchain import ChainState, layer_format, layer_path
from ..errors import (
    AlreadyExistsError,
    BoxDiedError,
    BoxliteError,
    ConfigError,
    EngineError,
    InvalidStateError,
    NotFoundError,
    ResourceExhaustedError,
    RpcError,
    StorageError,
    UnsupportedOptionError,
)
from ..fsutil.dirfd import remove_tree
from . import reach
from .locks import box_lock, try_box_lock
from .state import BoxRecord, now

if TYPE_CHECKING:
    from .lifecycle import BoxRuntime

NOT_RUNNING = ("configured", "stopped", "exited")
PARTIAL_PREFIX = ".partial-"
PENDING_MARK = ".pending"
OWNER_FILE = ".owner"
TMP_MARK = ".boxlite-tmp-"
"""In the name of an archive being written next to its destination (archive.py)."""
TARGET_FILE = ".target"
"""In an exporter's scratch dir: the path of that temporary archive, for recover_exports."""
MAX_SNAPSHOTS = 256
"""Named snapshots per box."""
GUEST_SYNC_TIMEOUT = 10.0
QEMU_IMG_TIMEOUT = 600.0


@dataclass
class Snapshot:
    id: str
    box_id: str
    name: str
    created_at: int
    size_bytes: int


# --- small helpers ------------------------------------------------------------------------
def new_layer_id() -> str:
    return secrets.token_hex(8)


def check_snapshot_name(name: object) -> str:
    if (
        not isinstance(name, str) or not name or len(name) > 128 or name in (".", "..") or "/" in name
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
    ):  # fmt: skip
        raise ConfigError(f"invalid snapshot name {name!r} (1-128 characters, no '/', no control characters)")
    return name


def check_engine(rec: BoxRecord) -> None:
    if rec.engine == "namespace" and rec.config.disk_size_gb:
        raise UnsupportedOptionError(
            "snapshots", "namespace boxes with disk_size_gb keep their writable layer in a disk image: not yet"
        )


def owner_token() -> str:
    """``pid start-time`` of this process (a dead owner's leftovers are garbage)."""
    return f"{os.getpid()} {process_start_time(os.getpid()) or 0}"


def owner_alive(token: str) -> bool:
    try:
        pid, start = (int(x) for x in token.split())
    except ValueError:
        return False
    return process_start_time(pid) == start


def qemu_img(*args: str) -> str:
    try:
        res = subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=QEMU_IMG_TIMEOUT)
    except FileNotFoundError:
        raise EngineError("qemu-img not found: install the Debian package qemu-utils") from None
    except subprocess.TimeoutExpired:
        raise EngineError(f"qemu-img {args[0]} took more than {QEMU_IMG_TIMEOUT:g}s") from None
    if res.returncode != 0:
        msg = res.stderr.strip()[-500:]
        if "No space left" in msg:
            raise ResourceExhaustedError(f"qemu-img {args[0]}: {msg}")
        raise EngineError(f"qemu-img {args[0]} failed: {msg}")
    return res.stdout


def _os_error(what: str, e: OSError) -> BoxliteError:
    if e.errno in (28, 122):  # ENOSPC, EDQUOT
        return ResourceExhaustedError(f"{what}: {e.strerror}")
    return StorageError(f"{what}: {e}")


def _du(path: Path) -> int:
    """Allocated bytes of a layer (file or tree), hard links counted once."""
    try:
        st = path.lstat()
    except OSError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        return st.st_blocks * 512
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                s = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if (s.st_dev, s.st_ino) not in seen:
                seen.add((s.st_dev, s.st_ino))
                total += s.st_blocks * 512
    return total


def load_state(box_dir: Path, engine: str) -> ChainState:
    try:
        state = diskchain.read_state(box_dir)
    except (ValueError, KeyError, OSError) as e:
        raise StorageError(f"{diskchain.state_path(box_dir)} is unreadable: {e}") from None
    if state is None:
        state = ChainState(top=diskchain.LEGACY_VM if engine == "vm" else diskchain.LEGACY_NS)
    return state


# --- layers -------------------------------------------------------------------------------
def _top_is_clean(box_dir: Path, engine: str, state: ChainState) -> bool:
    """Has nothing been written to the writable layer since it was created?"""
    top = layer_path(box_dir, state.top, engine)
    if engine == "vm":
        if not top.exists():
            return True
        st = top.stat()
        return state.top_mark is not None and state.top_mark == [st.st_size, st.st_mtime_ns]
    try:
        with os.scandir(top) as it:
            return next(it, None) is None
    except FileNotFoundError:
        return True


def make_top(box_dir: Path, engine: str, state: ChainState, parent: str | None, uid: int, model: Path | None) -> str:
    """Create an empty writable layer on ``parent`` (in ``state``'s box dir); returns its id and
    sets ``state.top``/``state.top_mark``. ``model``: a namespace layer whose root owner and mode
    the new one takes."""
    new = new_layer_id()
    path = layer_path(box_dir, new, engine)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if engine == "vm":
        assert parent is not None, "a VM box always has a base disk"
        backing = layer_path(box_dir, parent, engine)
        rel = os.path.relpath(backing, path.parent)
        qemu_img("create", "-q", "-f", "qcow2", "-F", layer_format(parent), "-b", rel, str(path))
        os.chmod(path, 0o600)
        st = path.stat()
        state.top_mark = [st.st_size, st.st_mtime_ns]
    else:
        path.mkdir(mode=0o755)
        mode = 0o755
        if model is not None:
            with contextlib.suppress(OSError):
                mode = stat.S_IMODE(model.stat().st_mode)
        os.chown(path, uid, uid)
        os.chmod(path, mode)
        state.top_mark = None
    state.top = new
    return new


def _ensure_vm_base(rt: BoxRuntime, rec: BoxRecord, state: ChainState) -> None:
    """A VM box that never started has no disk yet: make it (a snapshot needs one to freeze)."""
    if rec.engine != "vm" or state.top != diskchain.LEGACY_VM:
        return
    from ..engines.vm.disks import ensure_box_disk
    from ..engines.vm.engine import DEFAULT_DISK_GB

    disk = layer_path(rt.layout(rec.id).root, diskchain.LEGACY_VM, "vm")
    disk.parent.mkdir(parents=True, exist_ok=True)
    ensure_box_disk(disk, rec.config.disk_size_gb or DEFAULT_DISK_GB)


def freeze_top(rt: BoxRuntime, rec: BoxRecord, state: ChainState) -> str | None:
    """Freeze the writable layer of a stopped box (in ``state``, not yet written): returns the
    frozen layer the current content now is (None: the image alone)."""
    box_dir = rt.layout(rec.id).root
    _ensure_vm_base(rt, rec, state)
    if _top_is_clean(box_dir, rec.engine, state) and (state.head is not None or rec.engine == "namespace"):
        return state.head  # nothing written since the last freeze (None: the image alone)
    depth = len(state.ancestry(state.head))
    if depth >= diskchain.MAX_DEPTH:
        raise ResourceExhaustedError(
            f"box {rec.id} has {depth} frozen layers (limit {diskchain.MAX_DEPTH}): export and import it "
            "to flatten them"
        )
    frozen = state.top
    frozen_path = layer_path(box_dir, frozen, rec.engine)
    if rec.engine == "namespace":
        frozen_path.mkdir(mode=0o755, exist_ok=True)
        if frozen_path.stat().st_uid != rec.uid_base:
            os.chown(frozen_path, rec.uid_base, rec.uid_base)
    state.parents[frozen] = state.head
    state.head = frozen
    make_top(box_dir, rec.engine, state, frozen, rec.uid_base, frozen_path)
    return frozen


def gc(box_dir: Path, engine: str, state: ChainState | None = None) -> None:
    """Delete layers and temporary files the state does not name (caller holds the box lock)."""
    if state is None:
        try:
            state = diskchain.read_state(box_dir)
        except (ValueError, KeyError, OSError):
            return  # unreadable: keep everything (a human should look)
    if state is None:  # no snapshot committed yet: the original layer is the only one
        state = ChainState(top=diskchain.LEGACY_VM if engine == "vm" else diskchain.LEGACY_NS)
    refs = state.referenced()
    snap = diskchain.snap_dir(box_dir)
    for entry in os.scandir(snap) if snap.is_dir() else ():
        if entry.name.startswith(".state.") and entry.name.endswith(".tmp"):
            os.unlink(entry.path)
    layers = diskchain.layers_dir(box_dir)
    for entry in list(os.scandir(layers)) if layers.is_dir() else ():
        layer_id = entry.name.removesuffix(".qcow2")
        if layer_id not in refs or not diskchain.LAYER_ID.match(layer_id):
            remove_tree(entry.path) if entry.is_dir(follow_symlinks=False) else os.unlink(entry.path)
    legacy = diskchain.LEGACY_VM if engine == "vm" else diskchain.LEGACY_NS
    path = layer_path(box_dir, legacy, engine)
    if legacy not in refs and path.exists():
        remove_tree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def snapshot_info(rec: BoxRecord, box_dir: Path, entry: dict[str, object], sized: bool = True) -> Snapshot:
    layer = entry.get("layer")
    size = _du(layer_path(box_dir, str(layer), rec.engine)) if sized and isinstance(layer, str) else 0
    return Snapshot(str(entry["id"]), rec.id, str(entry["name"]), int(entry["created_at"]), size)  # type: ignore[call-overload]


# --- quiescing a running box ----------------------------------------------------------------
async def _guest_sync(rt: BoxRuntime, rec: BoxRecord) -> None:
    """VM: flush the guest's page cache to its disk: the agent's ``sync`` request; an agent
    older than it runs the image's ``sync`` (best effort: an image without one, in a box whose
    agent does not flush after each command, leaves a crash-consistent copy)."""
    with contextlib.suppress(Exception):
        client = await rt.client(rec)
        try:
            await client.request("sync", timeout=GUEST_SYNC_TIMEOUT)
            return
        except BoxDiedError:
            return
        except RpcError:  # "unknown op": an older agent
            pass
        body = rt.exec_body(rec, ["sync"], user="0", stdin=False)
        channel = await client.exec(body, "sync")
        await within(channel.exit, GUEST_SYNC_TIMEOUT)


@contextlib.asynccontextmanager
async def quiesced(rt: BoxRuntime, rec: BoxRecord) -> AsyncIterator[None]:
    """Every process of a running box stopped for the block (its disk consistent); a box that
    is not running, or paused, is left as it is."""
    if rec.state != "running":
        yield
        return
    engine, spec = rt.engine_for(rec), rt.spec(rec)
    running = RunningBox(rec.pid or 0, rec.pid_start or 0, spec.agent_socket)
    if rec.engine == "vm":
        await _guest_sync(rt, rec)
    freeze = getattr(engine, "freeze", None)
    own: list[int] = []
    try:
        if freeze is None:
            raise UnsupportedOptionError("freeze", "engine without freeze")
        await freeze(spec, running)
    except UnsupportedOptionError:
        own = _stop_processes(rt, rec)
    try:
        yield
    finally:
        if own:
            for pid in own:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
        else:
            await engine.thaw(spec, running)


def _stop_processes(rt: BoxRuntime, rec: BoxRecord) -> list[int]:
    """Fallback freeze for engines without ``freeze``: SIGSTOP QEMU, or every process of the
    namespace box's cgroups (repeated until no new one appears)."""
    run = rt.layout(rec.id).run_dir
    if rec.engine == "vm":
        try:
            pids = [int((run / "qemu.pid").read_text())]
        except (OSError, ValueError):
            raise EngineError(f"box {rec.id}: cannot find its QEMU process to quiesce it") from None
    else:
        from ..engines.namespace import cgroups
        from ..engines.namespace.engine import groups_pids

        groups = cgroups.BoxCgroups.load(rt.layout(rec.id).cgroups_file)
        if groups is None:
            raise EngineError(f"box {rec.id}: no cgroups to quiesce it")
        pids, seen = [], set()
        for _ in range(100):
            new = [p for p in groups_pids(groups) if p not in seen]
            if not new:
                break
            for pid in new:
                seen.add(pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
                    pids.append(pid)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    return pids


def copy_layer(src: Path, dest: Path, engine: str, fmt: str) -> None:
    """A full copy of a (quiesced) writable layer: a sparse file copy (a raw VM disk becomes
    qcow2), or ``cp -a`` of a namespace tree (owners, modes, xattrs, whiteouts kept)."""
    if engine == "vm":
        if fmt == "raw":
            qemu_img("convert", "-U", "-q", "-f", "raw", "-O", "qcow2", str(src), str(dest))
        else:
            _run(["cp", "--sparse=always", "--preserve=mode", str(src), str(dest)])
        os.chmod(dest, 0o400)
        return
    if not src.exists():
        dest.mkdir(mode=0o755)
        return
    _run(["cp", "-a", "--sparse=always", str(src), str(dest)])


def _run(argv: list[str]) -> None:
    res = subprocess.run(argv, capture_output=True, text=True)
    if res.returncode != 0:
        msg = res.stderr.strip()[-500:]
        if "No space left" in msg:
            raise ResourceExhaustedError(f"{argv[0]}: {msg}")
        raise StorageError(f"{argv[0]} failed: {msg}")


def link_layer(src: Path, dest: Path) -> None:
    """``dest`` shares the inodes of frozen layer ``src`` (a file, or a tree: directories are
    recreated with owner, mode, times and overlay xattrs; everything else is hard-linked)."""
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not src.is_dir() or src.is_symlink():
        os.link(src, dest, follow_symlinks=False)
        return

    def mkdir_like(s: str, d: str) -> None:
        st = os.lstat(s)
        os.mkdir(d, 0o700)
        with contextlib.suppress(OSError):
            for key in os.listxattr(s, follow_symlinks=False):
                if key.startswith("trusted.overlay."):
                    os.setxattr(d, key, os.getxattr(s, key, follow_symlinks=False), follow_symlinks=False)
        os.chown(d, st.st_uid, st.st_gid)
        os.chmod(d, stat.S_IMODE(st.st_mode))

    dirs: list[tuple[str, str]] = []
    mkdir_like(str(src), str(dest))
    dirs.append((str(src), str(dest)))
    for dirpath, dirnames, filenames in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        target = os.path.normpath(os.path.join(dest, rel))
        for name in dirnames:
            s, d = os.path.join(dirpath, name), os.path.join(target, name)
            if os.path.islink(s):
                os.link(s, d, follow_symlinks=False)
            else:
                mkdir_like(s, d)
                dirs.append((s, d))
        for name in filenames:
            os.link(os.path.join(dirpath, name), os.path.join(target, name), follow_symlinks=False)
    for s, d in reversed(dirs):
        st = os.lstat(s)
        os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


# --- operations ---------------------------------------------------------------------------
async def create(rt: BoxRuntime, box_id: str, name: str) -> Snapshot:
    """A named snapshot of the box's disk. A running box is quiesced while its writable layer
    is copied (the copy costs what it wrote); a stopped one costs the same whatever it wrote."""
    check_snapshot_name(name)
    rt.check_open()
    async with box_lock(rt.layout(box_id).lock):
        rec = rt.record(box_id, locked=True)
        check_engine(rec)
        box_dir = rt.layout(rec.id).root
        state = load_state(box_dir, rec.engine)
        if any(s["name"] == name for s in state.snapshots):
            raise AlreadyExistsError(f"box {rec.id} already has a snapshot named {name!r}")
        if len(state.snapshots) >= MAX_SNAPSHOTS:
            raise ResourceExhaustedError(f"box {rec.id} has {MAX_SNAPSHOTS} snapshots (the limit): remove some")
        try:
            if rec.state in NOT_RUNNING:
                layer = await asyncio.to_thread(freeze_top, rt, rec, state)
            elif rec.state in ("running", "paused"):
                layer = await _copy_running_top(rt, rec, state, box_dir)
            else:
                raise InvalidStateError(f"box {rec.id} is {rec.state}: cannot snapshot it now")
            entry = {"id": new_layer_id(), "name": name, "created_at": int(time.time()), "layer": layer}
            state.snapshots.append(entry)
            diskchain.write_state(box_dir, state)
        except OSError as e:
            raise _os_error(f"snapshot of box {rec.id}", e) from e
        finally:
            await asyncio.to_thread(gc, box_dir, rec.engine)
        return snapshot_info(rec, box_dir, entry)


async def _copy_running_top(rt: BoxRuntime, rec: BoxRecord, state: ChainState, box_dir: Path) -> str:
    """Freeze a copy of a running box's writable layer into a new frozen layer (parent: head)."""
    layer = new_layer_id()
    dest = layer_path(box_dir, layer, rec.engine)
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    src = layer_path(box_dir, state.top, rec.engine)
    fmt = layer_format(state.top)
    async with quiesced(rt, rec):
        await asyncio.to_thread(copy_layer, src, dest, rec.engine, fmt)
    state.parents[layer] = state.head
    return layer


def _find(state: ChainState, rec: BoxRecord, name: str) -> dict[str, object]:
    for entry in state.snapshots:
        if entry["name"] == name:
            return entry
    raise NotFoundError(f"box {rec.id} has no snapshot named {name!r}")


async def list_snapshots(rt: BoxRuntime, box_id: str) -> list[Snapshot]:
    rt.check_open()
    rec = rt.record(box_id)
    box_dir = rt.layout(rec.id).root
    state = load_state(box_dir, rec.engine)
    return [snapshot_info(rec, box_dir, e) for e in state.snapshots]


async def get(rt: BoxRuntime, box_id: str, name: str) -> Snapshot | None:
    return next((s for s in await list_snapshots(rt, box_id) if s.name == name), None)


async def restore(rt: BoxRuntime, box_id: str, name: str) -> None:
    """The box's disk becomes the snapshot's (what it wrote since is discarded)."""
    rt.check_open()
    async with box_lock(rt.layout(box_id).lock):
        rec = rt.record(box_id, locked=True)
        check_engine(rec)
        if rec.state not in NOT_RUNNING:
            raise InvalidStateError(f"box {rec.id} is {rec.state}: stop it before restoring a snapshot")
        box_dir = rt.layout(rec.id).root
        state = load_state(box_dir, rec.engine)
        entry = _find(state, rec, name)
        layer = entry.get("layer")
        try:
            state.head = layer if isinstance(layer, str) else None
            if state.head is None:  # the image alone (namespace: an empty writable layer)
                make_top(box_dir, rec.engine, state, None, rec.uid_base, None)
            else:
                make_top(
                    box_dir, rec.engine, state, state.head, rec.uid_base, layer_path(box_dir, state.head, rec.engine)
                )
            await asyncio.to_thread(diskchain.write_state, box_dir, state)
        except OSError as e:
            raise _os_error(f"restore of box {rec.id}", e) from e
        finally:
            await asyncio.to_thread(gc, box_dir, rec.engine)


async def remove(rt: BoxRuntime, box_id: str, name: str) -> None:
    rt.check_open()
    async with box_lock(rt.layout(box_id).lock):
        rec = rt.record(box_id, locked=True)
        box_dir = rt.layout(rec.id).root
        state = load_state(box_dir, rec.engine)
        entry = _find(state, rec, name)
        state.snapshots.remove(entry)
        diskchain.write_state(box_dir, state)
        await asyncio.to_thread(gc, box_dir, rec.engine, state)


# --- clone --------------------------------------------------------------------------------
def check_box_name(rt: BoxRuntime, name: str | None) -> None:
    if name is not None and (
        name in ("", ".", "..") or "/" in name or len(name) > 128 or any(ord(c) < 32 or ord(c) == 127 for c in name)
    ):
        raise ConfigError(f"invalid box name {name!r}")
    if name is not None and rt.db.get(name) is not None:
        raise AlreadyExistsError(f"a box named {name!r} already exists")


def new_partial(rt: BoxRuntime, box_id: str) -> Path:
    """The directory a new box is built in (renamed to ``boxes/<id>`` when complete)."""
    partial = rt.home.boxes_dir / f"{PARTIAL_PREFIX}{box_id}"
    partial.mkdir(mode=0o700)
    (partial / OWNER_FILE).write_text(owner_token())
    return partial


def commit_box(rt: BoxRuntime, partial: Path, rec: BoxRecord) -> None:
    """Move a complete box dir into place, then insert its record (a crash between the two
    leaves a dir with a pending mark: :func:`recover` removes it)."""
    rec = replace(rec, config=reach.for_caller(rec.config))  # a clone or import for a REST client
    (partial / PENDING_MARK).write_text(owner_token())
    (partial / OWNER_FILE).unlink(missing_ok=True)
    final = rt.layout(rec.id).root
    os.rename(partial, final)
    try:
        rt.db.insert(rec)
    except BaseException:
        remove_tree(final)
        raise
    rt.db.bump("boxes_created_total")
    (final / PENDING_MARK).unlink(missing_ok=True)


async def clone(rt: BoxRuntime, box_id: str, name: str | None = None) -> BoxRecord:
    """A new, independent, stopped box with the source's disk as it is now."""
    from .lifecycle import new_box_id

    rt.check_open()
    check_box_name(rt, name)
    async with box_lock(rt.layout(box_id).lock):
        src = rt.record(box_id, locked=True)
        check_engine(src)
        if src.state not in (*NOT_RUNNING, "running", "paused"):
            raise InvalidStateError(f"box {src.id} is {src.state}: cannot clone it now")
        src_dir = rt.layout(src.id).root
        state = load_state(src_dir, src.engine)
        new_id = new_box_id()
        partial = new_partial(rt, new_id)
        try:
            new_state = ChainState(top="")
            if src.state in NOT_RUNNING:
                head = await asyncio.to_thread(freeze_top, rt, src, state)
                diskchain.write_state(src_dir, state)
                chain = state.ancestry(head)
            else:  # quiesced while its writable layer is copied into the clone
                head = new_layer_id()
                dest = layer_path(partial, head, src.engine)
                dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                async with quiesced(rt, src):
                    top = layer_path(src_dir, state.top, src.engine)
                    await asyncio.to_thread(copy_layer, top, dest, src.engine, layer_format(state.top))
                new_state.parents[head] = state.head
                chain = state.ancestry(state.head)
            for layer in chain:  # frozen layers: shared inodes (never written again)
                await asyncio.to_thread(
                    link_layer, layer_path(src_dir, layer, src.engine), layer_path(partial, layer, src.engine)
                )
                new_state.parents.setdefault(layer, state.parents.get(layer))
            new_state.head = head
            model = layer_path(partial, head, src.engine) if head else None
            await asyncio.to_thread(make_top, partial, src.engine, new_state, head, src.uid_base, model)
            diskchain.write_state(partial, new_state)
            rec = replace(
                src, id=new_id, name=name, state="stopped" if src.state != "configured" else "configured",
                created_at=now(), started_at=None, pid=None, pid_start=None, owner_pid=None, owner_start=None,
                boot_ms=None, exit_code=None, finished_at=None, oom_killed=False,
            )  # fmt: skip
            if hasattr(rec, "paused_to_disk"):
                rec.paused_to_disk = False  # type: ignore[attr-defined]
            commit_box(rt, partial, rec)
        except OSError as e:
            raise _os_error(f"clone of box {src.id}", e) from e
        finally:
            if partial.exists():
                await asyncio.to_thread(remove_tree, partial)
            await asyncio.to_thread(gc, src_dir, src.engine)
        return rec


# --- crash recovery -----------------------------------------------------------------------
def recover(rt: BoxRuntime) -> None:
    """Delete what a killed process left half-done: partial boxes, boxes whose record was never
    inserted, unreferenced layers, temporary state files, a dead server's archives in transit."""
    transfers = rt.home.root / "transfers"
    for entry in list(os.scandir(transfers)) if transfers.is_dir() else ():
        with contextlib.suppress(OSError):
            owner = Path(entry.path) / OWNER_FILE
            if owner.exists() and not owner_alive(owner.read_text()):
                remove_tree(entry.path)
    boxes = rt.home.boxes_dir
    for entry in list(os.scandir(boxes)):
        path = Path(entry.path)
        with contextlib.suppress(OSError):
            if entry.name.startswith(PARTIAL_PREFIX):
                marks = [m for m in (path / OWNER_FILE, path / PENDING_MARK) if m.exists()]
                # (the owner file is written right after the mkdir: without one, give its maker a second)
                dead = not owner_alive(marks[0].read_text()) if marks else time.time() - path.stat().st_mtime > 1
                if dead:
                    remove_tree(path)
                continue
            mark = path / PENDING_MARK
            if mark.exists() and not owner_alive(mark.read_text()):
                if rt.db.get(entry.name) is None:
                    remove_tree(path)
                else:
                    mark.unlink()
                continue
            if diskchain.snap_dir(path).exists():
                rec = rt.db.get(entry.name)
                if rec is not None:
                    with try_box_lock(rt.layout(rec.id).lock) as taken:
                        if taken:
                            gc(path, rec.engine)


def recover_exports(rt: BoxRuntime) -> None:
    """Half-written archives of dead exporters (their scratch dir names the temporary file).
    Here, not in archive.py, so that opening a runtime does not import the archive code."""
    for entry in list(os.scandir(rt.home.boxes_dir)):
        if not entry.name.startswith(PARTIAL_PREFIX):
            continue
        target = Path(entry.path) / TARGET_FILE
        owner = Path(entry.path) / OWNER_FILE
        with contextlib.suppress(OSError):
            if target.exists() and not owner_alive(owner.read_text() if owner.exists() else ""):
                tmp = Path(target.read_text())
                if TMP_MARK in tmp.name and tmp.name.startswith("."):
                    tmp.unlink(missing_ok=True)


__all__ = ["Snapshot", "clone", "create", "get", "list_snapshots", "recover", "recover_exports", "remove", "restore"]
