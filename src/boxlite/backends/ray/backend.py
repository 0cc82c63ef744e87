"""``RayBackend``: the boxes of a Ray cluster behind the ``Backend`` interface.

The driver keeps no authoritative state: every box lives in the local runtime of the node service
(``node.py``) on the node it was placed on, under that node's own home. The driver remembers
box -> node to route calls, and finds boxes it does not know (another driver's, a reattach) by
asking every node service. Every Ray call has a deadline (or, for calls that legitimately wait on
a command, a ping of the node every ``ping_interval``): a lost node turns into ``BoxDiedError``
naming it, never a hang.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import pickle
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...aio import within
from ...api.options import DEFAULT_CPUS, DEFAULT_MEMORY_MIB, BoxOptions
from ...api.results import BoxInfo, BoxMetrics, BoxStateInfo, RuntimeMetrics, SnapshotInfo, iso
from ...errors import (
    AlreadyExistsError,
    BoxDiedError,
    BoxliteError,
    ConfigError,
    NotFoundError,
    ResourceExhaustedError,
    StoppedError,
    UnsupportedOptionError,
)
from ...images import ImageConfig, ImageInfo
from ...images.types import PullProgress
from ...runtime.lifecycle import DEFAULT_IMAGE_NAME, new_box_id
from ...wire import decode_error
from ..base import Backend, ExecCounters, ExecRequest, ImagesBackend, StartedExec, check_signal
from .channel import STREAM_BACKPRESSURE, RayChannel
from .directory import open_directory
from .node import CHUNK, MAX_BEGIN_WAIT, PACKED, NodeService, pack
from .placement import STRATEGIES, NodeLoad, choose

LOST = "lost"
"""``BoxInfo.state.status`` of a box whose node is gone."""
VIEW_TTL = 1.0
"""Seconds the driver reuses the cluster's alive nodes and their loads for placement."""
DIRECTORY_TIMEOUT = 10.0
"""Deadline of a directory call (a hint: on a miss the driver asks every node service)."""


@dataclass(frozen=True)
class RayOptions:
    """How ``Boxlite.ray`` places boxes and talks to the cluster."""

    address: str = "auto"
    strategy: str = "spread"
    """``spread``: the least loaded node that fits; ``pack``: the most loaded that fits."""
    max_boxes_per_node: int = 64
    overcommit: float = 1.0
    """Boxes' cpus/memory may add up to this multiple of a node's Ray ``CPU``/``memory``."""
    engine: str | None = None
    home_dir: str | None = None
    """Each node's home (``{node_id}`` is replaced); default: the node's ``BOXLITE_HOME`` or ~/.boxlite."""
    node_resource: str | None = None
    """Only nodes offering this custom Ray resource host boxes (default: every node)."""
    namespace: str = "boxlite"
    call_timeout: float = 60.0
    create_timeout: float = 600.0
    ping_interval: float = 5.0
    ping_timeout: float = 10.0
    max_transfer_bytes: int = 1 << 30
    """Largest copy_in/copy_out (tar bytes) one call moves (the node services cap it at 16 GiB)."""
    lazy_create: bool = True
    """A box without a name that the driver does not detach is placed at ``create`` and made on
    its node by its first command (one Ray call for both, BoxLite's lazy creation); errors of the
    node's part of creating it (image, node limit of a node no other node can stand in for) come
    from that first use. Only while the node, as this driver sees it, is at most half full: near
    the limit, creation stays a call of its own, so the node refuses at ``create``."""
    exec_wait: float = 0.05
    """Seconds a node waits for a new command to end before answering its start: a command that
    ends within it costs one Ray call (output and exit come with the answer); a longer one's
    output streams after it, its first output at most this late (0: stream from the start)."""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy must be one of {STRATEGIES}, not {self.strategy!r}")
        if self.max_boxes_per_node < 1 or self.overcommit <= 0 or self.max_transfer_bytes < 1:
            raise ConfigError("max_boxes_per_node, overcommit and max_transfer_bytes must be positive")
        if min(self.call_timeout, self.create_timeout, self.ping_interval, self.ping_timeout) <= 0:
            raise ConfigError("timeouts must be positive")
        if not isinstance(self.exec_wait, (int, float)) or not 0 <= self.exec_wait <= MAX_BEGIN_WAIT:
            raise ConfigError(f"exec_wait must be 0-{MAX_BEGIN_WAIT:g} seconds, not {self.exec_wait!r}")


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UnsupportedOptionError("ray", "Ray is not installed: pip install 'boxlite[ray]'") from None
    return ray


@dataclass
class _Unborn:
    """A box placed on a node but not made there yet (``RayOptions.lazy_create``)."""

    node_id: str
    options: BoxOptions
    delta: tuple[int, float, int]  # what it adds to its node's load (in ``_pending`` until it is made)
    making: asyncio.Future[None] | None = None  # a call making it is on its way


class NodeRef:
    """One node service as the driver sees it: calls with deadlines, envelopes unwrapped."""

    def __init__(self, node_id: str, handle: Any, options: RayOptions) -> None:
        self.node_id, self.handle, self._o = node_id, handle, options
        self.ping_interval = options.ping_interval

    @property
    def h(self) -> Any:
        """The actor handle; ``None`` stands for a node that was not alive when first needed."""
        if self.handle is None:
            raise BoxDiedError(f"Ray node {self.node_id} is lost (not alive in the cluster)")
        return self.handle

    def died(self, exc: BaseException) -> BoxDiedError:
        return BoxDiedError(f"Ray node {self.node_id} is lost ({type(exc).__name__}: {str(exc)[:200]})")

    @staticmethod
    def unwrap(envelope: Any) -> Any:
        if isinstance(envelope, bytes):  # an answer of ``packed``
            envelope = pickle.loads(envelope)
        kind, value = envelope
        if kind == "ok":
            return value
        raise decode_error(value)

    async def _await(self, ref: Any, timeout: float | None) -> Any:
        """The envelope's value; ``timeout`` None: wait as long as the node answers pings."""
        fut = asyncio.wrap_future(ref.future())
        try:
            if timeout is not None:
                try:
                    return self.unwrap(await within(fut, timeout))
                except asyncio.TimeoutError:
                    raise BoxDiedError(f"Ray node {self.node_id} did not answer within {timeout:g}s") from None
            while True:
                done, _ = await asyncio.wait({fut}, timeout=self.ping_interval)
                if done:
                    return self.unwrap(fut.result())
                await self.ping()
        except BoxliteError:
            raise
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except Exception as e:
            raise self.died(e) from None

    async def ping(self) -> str:
        result: str = await self._await(self.h.ping.remote(), self._o.ping_timeout)
        return result

    async def call(self, method: str, *args: Any, timeout: float | None = -1.0) -> Any:
        """A local-backend method on the node (``timeout`` -1: the call deadline)."""
        return await self._await(self.h.packed.remote("call", pack((method, *args))), self._deadline(timeout))

    async def call_raw(self, method: str, *args: Any, timeout: float | None = -1.0) -> Any:
        """A node-service method (exec and copy plumbing)."""
        packed = method in PACKED
        ref = self.h.packed.remote(method, pack(args)) if packed else getattr(self.h, method).remote(*args)
        return await self._await(ref, self._deadline(timeout))

    def _deadline(self, timeout: float | None) -> float | None:
        return self._o.call_timeout if timeout == -1.0 else timeout

    def call_sync(self, method: str, *args: Any) -> Any:
        ray = _ray()
        try:
            envelope = ray.get(self.h.packed.remote("call", pack((method, *args))), timeout=self._o.call_timeout)
        except BoxliteError:
            raise
        except Exception as e:
            raise self.died(e) from None
        return self.unwrap(envelope)

    def stream(self, method: str, *args: Any) -> Any:
        """A streaming-generator call, at most ``STREAM_BACKPRESSURE`` chunks ahead of the reader."""
        fn = getattr(self.h, method).options(
            num_returns="streaming", _generator_backpressure_num_objects=STREAM_BACKPRESSURE
        )
        return fn.remote(*args)


class RayImages(ImagesBackend):
    """The image stores of the nodes: pulls and removals go to every node."""

    def __init__(self, backend: RayBackend) -> None:
        self._b = backend

    async def _each(self, *args: Any) -> builtins.list[Any]:
        nodes = await self._b.nodes()
        return list(await asyncio.gather(*(n.call("image", *args, timeout=self._b.o.create_timeout) for n in nodes)))

    async def pull(self, reference: str, progress: Callable[[PullProgress], None] | None = None) -> ImageInfo:
        """Pull on every node (``progress`` is not forwarded)."""
        results = await self._each("pull", reference)
        if not results:
            raise NotFoundError("the Ray cluster has no node for boxes")
        info: ImageInfo = results[0]
        return info

    async def list(self) -> builtins.list[ImageInfo]:
        seen: dict[str, ImageInfo] = {}
        for infos in await self._each("list"):
            for info in infos:
                seen.setdefault(repr(info), info)
        return list(seen.values())

    async def get(self, reference: str) -> ImageInfo | None:
        return next((i for i in await self._each("get", reference) if i is not None), None)

    async def config(self, reference: str) -> ImageConfig:
        nodes = await self._b.nodes()
        if not nodes:
            raise NotFoundError("the Ray cluster has no node for boxes")
        config: ImageConfig = await nodes[0].call("image", "config", reference, timeout=self._b.o.create_timeout)
        return config

    async def remove(self, reference: str, force: bool = False) -> None:
        await self._each("remove", reference, force)

    async def load(self, path: str | Path) -> builtins.list[ImageInfo]:
        raise UnsupportedOptionError("images.load", "the archive is on the driver, not on the Ray nodes")

    async def gc(self) -> int:
        return sum(int(n) for n in await self._each("gc"))


class RayBackend(Backend):
    """Boxes placed on the nodes of a Ray cluster, one node service (Ray actor) per node."""

    def __init__(self, options: RayOptions) -> None:
        ray = _ray()
        self.o = options
        if not ray.is_initialized():
            try:
                ray.init(
                    address=options.address, namespace=options.namespace, log_to_driver=False, logging_level="WARNING"
                )
            except Exception as e:  # no cluster there, a version mismatch, ...
                raise ConfigError(f"cannot connect to the Ray cluster at {options.address!r}: {e}") from None
        self._nodes: dict[str, NodeRef] = {}
        self._where: dict[str, str] = {}  # box id -> node id
        self._last: dict[str, BoxInfo] = {}  # last info seen per box (what list shows once its node is lost)
        self._owned: set[str] = set()  # non-detached boxes this driver created: stopped by shutdown()
        self._pending: dict[str, builtins.list[float]] = {}  # node -> [boxes, cpus, memory] being created
        self._alive_view: dict[str, dict[str, Any]] = {}
        self._alive_at = 0.0
        self._hellos: dict[str, dict[str, Any]] = {}  # node id -> its last answer to hello
        self._hello_at = 0.0
        self._ready: set[str] = set()  # boxes seen ready (Box.exec asks before every command)
        self._fresh: set[str] = set()  # boxes this driver created and has not used: their first exec starts them
        self._unborn: dict[str, _Unborn] = {}  # boxes placed, to be made by their first use
        self._directory: Any = None  # the cluster's box directory (directory.py), opened on first use
        self._closed = False

    # --- nodes ----------------------------------------------------------------------------
    def _alive(self, fresh: bool = False) -> dict[str, dict[str, Any]]:
        """The alive Ray nodes that may host boxes, by node id (asked of the GCS at most every
        ``VIEW_TTL``, unless ``fresh``: a blocking call, and ``create`` needs it every time)."""
        now = time.monotonic()
        if fresh or now - self._alive_at > VIEW_TTL:
            alive = {}
            for n in _ray().nodes():
                res = n.get("Resources") or {}
                if n.get("Alive") and (self.o.node_resource is None or res.get(self.o.node_resource, 0) > 0):
                    alive[n["NodeID"]] = res
            self._alive_view, self._alive_at = alive, now
        return self._alive_view

    def _service(self, node_id: str) -> NodeRef:
        """The node's service, started on demand (detached: it outlives this driver, with its boxes)."""
        ref = self._nodes.get(node_id)
        if (
            ref is None
            and node_id not in self._alive()
            and not any(n.get("Alive") and n["NodeID"] == node_id for n in _ray().nodes())
        ):
            ref = self._nodes[node_id] = NodeRef(node_id, None, self.o)  # gone: its calls raise BoxDiedError
        if ref is None:
            ray = _ray()
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            handle = (
                ray.remote(NodeService)
                .options(
                    name=f"boxlite-node-{node_id}",
                    namespace=self.o.namespace,
                    lifetime="detached",
                    get_if_exists=True,
                    num_cpus=0,
                    max_restarts=0,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
                )
                .remote(node_id, self.o.home_dir, self.o.engine)
            )
            ref = self._nodes[node_id] = NodeRef(node_id, handle, self.o)
        return ref

    async def _dir(self, method: str, *args: Any) -> Any:
        """A call on the cluster's directory, or None when it cannot answer (it is only a hint)."""
        try:
            if self._directory is None:
                self._directory = open_directory(_ray(), self.o.namespace)
            ref = getattr(self._directory, method).remote(*args)
            return await within(asyncio.wrap_future(ref.future()), min(self.o.call_timeout, DIRECTORY_TIMEOUT))
        except Exception:
            self._directory = None
            return None

    async def nodes(self) -> builtins.list[NodeRef]:
        """The node services of the alive nodes that answer (started on demand)."""
        refs = [self._service(node_id) for node_id in self._alive()]
        answers = await asyncio.gather(*(r.call_raw("hello", timeout=self.o.create_timeout) for r in refs),
                                       return_exceptions=True)  # fmt: skip
        return [r for r, a in zip(refs, answers, strict=True) if not isinstance(a, BaseException)]

    async def _loads(self) -> builtins.list[NodeLoad]:
        """Every alive node's load: its answer to ``hello`` (reused for ``VIEW_TTL``, plus what this
        driver created there since), plus this driver's creations in flight. A hint: each node
        enforces its box limit itself."""
        alive = self._alive()
        refs = [self._service(node_id) for node_id in alive]
        if time.monotonic() - self._hello_at > VIEW_TTL or set(self._hellos) != set(alive):
            answers = await asyncio.gather(*(r.call_raw("hello", timeout=self.o.create_timeout) for r in refs),
                                           return_exceptions=True)  # fmt: skip
            self._hellos = {r.node_id: a for r, a in zip(refs, answers, strict=True) if isinstance(a, dict)}
            self._hello_at = time.monotonic()
        loads = []
        for ref in refs:
            hello = self._hellos.get(ref.node_id)
            if hello is None:
                continue
            res = alive[ref.node_id]
            pending = self._pending.get(ref.node_id, [0, 0.0, 0])
            loads.append(NodeLoad(
                ref.node_id, float(res.get("CPU", 0)), int(res.get("memory", 0) // (1 << 20)),
                boxes=int(hello["boxes"] + pending[0]), used_cpus=float(hello["cpus"] + pending[1]),
                used_memory_mib=int(hello["memory_mib"] + pending[2]),
            ))  # fmt: skip
        return loads

    def node_of(self, box_id: str) -> str | None:
        """The id of the Ray node a box lives on (as far as this driver knows)."""
        return self._where.get(box_id)

    def _seen(self, info: BoxInfo, node_id: str) -> BoxInfo:
        self._where[info.id] = node_id
        self._last[info.id] = info
        return info

    def _forget(self, box_id: str) -> None:
        self._ready.discard(box_id)
        self._fresh.discard(box_id)
        self._where.pop(box_id, None)
        self._last.pop(box_id, None)
        self._owned.discard(box_id)

    async def _node(self, id_or_name: str) -> tuple[NodeRef, str]:
        """The node service holding a box, and the box's id."""
        self._check_open()
        if id_or_name in self._unborn:
            await self._born(id_or_name)
        if id_or_name in self._where:
            return self._service(self._where[id_or_name]), id_or_name
        for box_id, seen in self._last.items():
            if seen.name == id_or_name:
                return self._service(self._where[box_id]), box_id
        info = await self.get(id_or_name)
        if info is None:
            raise NotFoundError(f"no box {id_or_name!r} on the Ray cluster")
        return self._service(self._where[info.id]), info.id

    def _check_open(self) -> None:
        if self._closed:
            raise StoppedError("this Ray runtime was shut down")

    # --- Backend --------------------------------------------------------------------------
    @property
    def images(self) -> RayImages:
        return RayImages(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def describe(self) -> str:
        return f"ray={self.o.address!r}, strategy={self.o.strategy!r}, open={not self._closed}"

    async def create(self, options: BoxOptions, name: str | None) -> BoxInfo:
        self._check_open()
        if name is not None and await self.get(name) is not None:
            raise AlreadyExistsError(f"a box named {name!r} exists on the Ray cluster")
        cpus = float(DEFAULT_CPUS if options.cpus is None else options.cpus)
        memory = int(DEFAULT_MEMORY_MIB if options.memory_mib is None else options.memory_mib)
        lazy = self.o.lazy_create and name is None and not options.detach
        if lazy:
            options.to_config()  # a bad option is a ConfigError now, not at first use
        loads, refused, fresh = await self._loads(), set(), time.monotonic() - self._hello_at < 0.05
        while True:  # a node that refuses (its own box limit: another driver got there first) is skipped
            try:
                chosen = choose(loads, cpus, memory, self.o.strategy, self.o.max_boxes_per_node, self.o.overcommit)
            except ResourceExhaustedError:
                if fresh:
                    raise
                self._hello_at, fresh = 0.0, True  # full as far as a reused view says: ask the nodes
                loads = [n for n in await self._loads() if n.node_id not in refused]
                continue
            delta = (1, cpus, memory)
            if lazy and 2 * (chosen.boxes + 1) <= self.o.max_boxes_per_node:
                return self._place_unborn(chosen.node_id, options, delta)
            pending = self._pending.setdefault(chosen.node_id, [0, 0.0, 0])
            for i, d in enumerate(delta):
                pending[i] += d
            try:
                info: BoxInfo = await self._service(chosen.node_id).call_raw(
                    "create", options, name, self.o.max_boxes_per_node, timeout=self.o.create_timeout
                )
                break
            except ResourceExhaustedError:
                refused.add(chosen.node_id)
                loads = [n for n in loads if n.node_id != chosen.node_id]
                self._hello_at = 0.0  # that node's load was stale: ask again next time
            finally:
                for i, d in enumerate(delta):
                    pending[i] -= d
        self._count_made(chosen.node_id, delta)
        if not info.detach:
            self._owned.add(info.id)
        self._fresh.add(info.id)
        return self._seen(info, chosen.node_id)

    def _count_made(self, node_id: str, delta: tuple[int, float, int]) -> None:
        hello = self._hellos.get(node_id)
        if hello is not None:  # the cached load counts it until the next hello
            hello.update(boxes=hello["boxes"] + delta[0], cpus=hello["cpus"] + delta[1],
                         memory_mib=hello["memory_mib"] + delta[2])  # fmt: skip

    def _pend(self, node_id: str, delta: tuple[int, float, int], sign: int) -> None:
        pending = self._pending.setdefault(node_id, [0, 0.0, 0])
        for i, d in enumerate(delta):
            pending[i] += sign * d

    def _place_unborn(self, node_id: str, options: BoxOptions, delta: tuple[int, float, int]) -> BoxInfo:
        """A box placed on ``node_id``, counted in its load, made there by its first use."""
        box_id = new_box_id()
        self._pend(node_id, delta, +1)
        self._unborn[box_id] = _Unborn(node_id, options, delta)
        self._owned.add(box_id)
        self._fresh.add(box_id)
        info = BoxInfo(
            id=box_id, name=None, state=BoxStateInfo(status="configured", running=False),
            created_at=iso(time.time()) or "", started_at=None,
            image=str(options.rootfs_path or options.image or DEFAULT_IMAGE_NAME),
            cpus=options.cpus, memory_mib=options.memory_mib, engine=options.engine or self.o.engine or "",
            detach=False, auto_remove=options.removes_on_stop(),
        )  # fmt: skip
        return self._seen(info, node_id)

    def _drop_unborn(self, box_id: str) -> None:
        u = self._unborn.pop(box_id)
        self._pend(u.node_id, u.delta, -1)

    def _made(self, box_id: str, info: BoxInfo | None = None) -> None:
        """An unborn box its node made (``info``: its answer), or may have made (none: the call
        failed or was lost on the way): from now on its node's answers count."""
        u = self._unborn.pop(box_id, None)
        if u is None:
            return
        self._pend(u.node_id, u.delta, -1)
        self._count_made(u.node_id, u.delta)
        if info is not None:
            self._seen(info, u.node_id)

    async def _born(self, box_id: str) -> None:
        """Make an unborn box on its node (one ``create`` call), or wait for the call making it."""
        while (u := self._unborn.get(box_id)) is not None:
            if u.making is not None:
                with contextlib.suppress(BaseException):  # made by it, or not: then this one tries
                    await asyncio.shield(u.making)
                continue
            await self._making(box_id, u, self._create_unborn(box_id))

    async def _making(self, box_id: str, u: _Unborn, work: Any) -> Any:
        """Run ``work`` (a coroutine making ``box_id``) as the one call doing so; others wait on it."""
        u.making = done = asyncio.get_running_loop().create_future()
        try:
            result = await work
        except BaseException as e:
            if box_id in self._unborn:
                u.making = None  # not made: the next use tries again
            if not done.done():
                done.set_exception(e)
                done.exception()  # retrieved: waiters raise their own
            raise
        if not done.done():
            done.set_result(None)
        return result

    async def _create_unborn(self, box_id: str) -> None:
        u = self._unborn[box_id]
        refused: set[str] = set()
        while True:
            try:
                info: BoxInfo = await self._service(u.node_id).call_raw(
                    "create", u.options, None, self.o.max_boxes_per_node, box_id, timeout=self.o.create_timeout
                )
            except ResourceExhaustedError:
                refused.add(u.node_id)
                await self._replace(box_id, u, refused)
                continue
            self._made(box_id, info)
            return

    async def _replace(self, box_id: str, u: _Unborn, refused: set[str]) -> None:
        """The node refused an unborn box (its limit, other drivers got there first): another node."""
        self._hello_at = 0.0
        loads = [n for n in await self._loads() if n.node_id not in refused]
        self._pend(u.node_id, u.delta, -1)
        cpus, memory = u.delta[1], u.delta[2]
        try:
            chosen = choose(loads, cpus, memory, self.o.strategy, self.o.max_boxes_per_node, self.o.overcommit)
        except ResourceExhaustedError:
            self._pend(u.node_id, u.delta, +1)  # still counted where it was placed, until removed
            raise
        u.node_id = chosen.node_id
        self._pend(u.node_id, u.delta, +1)
        self._where[box_id] = u.node_id

    async def get(self, id_or_name: str) -> BoxInfo | None:
        self._check_open()
        if id_or_name in self._unborn:
            return self._last[id_or_name]
        known = self._where.get(id_or_name)
        if known is not None:
            try:
                info = await self._service(known).call("get", id_or_name)
            except BoxDiedError:
                return _lost(self._last[id_or_name])
            if info is None:
                self._forget(id_or_name)
            return None if info is None else self._seen(info, known)
        hit = await self._dir("lookup", id_or_name)
        if hit is not None:
            node_id, info = hit
            if not self._alive_node(node_id):
                await self.nodes()  # a node on the same home takes over (and drops) the lost node's entries
                hit = await self._dir("lookup", id_or_name)
            if hit is not None:
                node_id, info = hit
                try:
                    fresh = await self._service(node_id).call("get", info.id)
                except BoxDiedError:
                    return _lost(self._seen(info, node_id))
                if fresh is not None:
                    return self._seen(fresh, node_id)
        refs = await self.nodes()
        answers = await asyncio.gather(*(r.call("get", id_or_name) for r in refs), return_exceptions=True)
        for ref, info in zip(refs, answers, strict=True):
            if isinstance(info, BoxInfo):
                return self._seen(info, ref.node_id)
        return None

    def info(self, box_id: str) -> BoxInfo:
        self._check_open()
        if box_id in self._unborn:
            return self._last[box_id]
        node_id = self._where.get(box_id)
        if node_id is None:
            raise NotFoundError(f"no box {box_id!r} known to this driver (use get first)")
        try:
            info: BoxInfo = self._service(node_id).call_sync("info", box_id)
        except BoxDiedError:
            return _lost(self._last[box_id])  # its node is gone: the last state seen, as lost
        return self._seen(info, node_id)

    async def list(self, state: str | None = None) -> builtins.list[BoxInfo]:
        """Every node's boxes; those of lost nodes (known to this driver) as ``lost``."""
        self._check_open()
        alive = set(self._alive())
        node_ids = alive | set(self._where.values())
        refs = [self._service(n) for n in node_ids]
        answers = await asyncio.gather(*(r.call("list", None) for r in refs), return_exceptions=True)
        out: builtins.list[BoxInfo] = []
        answered: builtins.list[str] = []
        for ref, infos in zip(refs, answers, strict=True):
            if isinstance(infos, BaseException):
                if not isinstance(infos, BoxliteError):
                    raise infos
                continue
            answered.append(ref.node_id)
            out += [self._seen(i, ref.node_id) for i in infos]
        # the boxes of nodes that did not answer: from the directory (every driver's), else this driver's
        entries = await self._dir("entries", sorted(answered))
        if entries is not None:
            out += [_lost(self._seen(i, n)) for n, i in entries]
        else:
            out += [_lost(i) for b, i in self._last.items() if self._where.get(b) not in answered]
        seen = {i.id for i in out}
        out += [self._last[b] for b in self._unborn if b not in seen]  # placed, made by their first use
        return [i for i in out if state is None or i.state.status == state]

    def _alive_node(self, node_id: str) -> bool:
        return node_id in self._alive(fresh=True)

    async def remove(self, id_or_name: str, force: bool = False) -> None:
        u = self._unborn.get(id_or_name)
        if u is not None and u.making is None:  # never made: nothing on its node to remove
            self._check_open()
            self._drop_unborn(id_or_name)
            self._forget(id_or_name)
            return
        node, box_id = await self._node(id_or_name)
        try:
            await node.call("remove", box_id, force)
        except BoxDiedError:
            if not force or self._alive_node(node.node_id):
                raise
            await self._dir("forget", box_id)  # its node is gone: force drops it from the directory
        self._forget(box_id)

    async def start(self, box_id: str, detach: bool | None = None) -> BoxInfo:
        node, box_id = await self._node(box_id)
        info: BoxInfo = await node.call("start", box_id, detach, timeout=self.o.create_timeout)
        (self._owned.add if not info.detach else self._owned.discard)(info.id)
        return self._seen(info, node.node_id)

    async def stop(self, box_id: str, timeout: float | None = None) -> None:
        node, box_id = await self._node(box_id)
        deadline = self.o.call_timeout + (timeout or 10.0)
        self._ready.discard(box_id)
        await node.call("stop", box_id, timeout, timeout=deadline)
        self._owned.discard(box_id)

    async def pause(self, box_id: str, to_disk: bool = False) -> BoxInfo:
        node, box_id = await self._node(box_id)
        self._ready.discard(box_id)
        return self._seen(await node.call("pause", box_id, to_disk, timeout=self.o.create_timeout), node.node_id)

    async def signal_main(self, box_id: str, signal: int) -> None:
        node, box_id = await self._node(box_id)
        await node.call("signal_main", box_id, check_signal(signal))

    async def exec_detached(self, box_id: str, request: ExecRequest) -> int:
        node, box_id = await self._node(box_id)
        return int(await node.call("exec_detached", box_id, request))

    async def resume(self, box_id: str, detach: bool | None = None) -> BoxInfo:
        node, box_id = await self._node(box_id)
        return self._seen(await node.call("resume", box_id, detach, timeout=self.o.create_timeout), node.node_id)

    async def fork(self, box_id: str, n: int = 1) -> builtins.list[BoxInfo]:
        """The children live on the parent's node (its memory and disk are there)."""
        node, box_id = await self._node(box_id)
        children = await node.call("fork", box_id, n, timeout=self.o.create_timeout)
        self._owned.update(c.id for c in children if not c.detach)
        return [self._seen(c, node.node_id) for c in children]

    async def clone(self, box_id: str, name: str | None) -> BoxInfo:
        node, box_id = await self._node(box_id)
        if name is not None and await self.get(name) is not None:
            raise AlreadyExistsError(f"a box named {name!r} exists on the Ray cluster")
        return self._seen(await node.call("clone", box_id, name, timeout=self.o.create_timeout), node.node_id)

    async def snapshot_create(self, box_id: str, name: str) -> SnapshotInfo:
        node, box_id = await self._node(box_id)
        info: SnapshotInfo = await node.call("snapshot_create", box_id, name, timeout=self.o.create_timeout)
        return info

    async def snapshot_list(self, box_id: str) -> builtins.list[SnapshotInfo]:
        node, box_id = await self._node(box_id)
        infos: builtins.list[SnapshotInfo] = await node.call("snapshot_list", box_id)
        return infos

    async def snapshot_restore(self, box_id: str, name: str) -> None:
        node, box_id = await self._node(box_id)
        await node.call("snapshot_restore", box_id, name, timeout=self.o.create_timeout)

    async def snapshot_remove(self, box_id: str, name: str) -> None:
        node, box_id = await self._node(box_id)
        await node.call("snapshot_remove", box_id, name, timeout=self.o.create_timeout)

    async def ready(self, box_id: str) -> None:
        """Start the box if needed; skipped for a box this driver saw ready, and for one it created
        and has not used yet (the node starts a box on its exec or copy anyway): a new box's first
        exec is one call, not two."""
        if box_id in self._unborn:  # its first use makes and starts it
            self._check_open()
            return
        node, box_id = await self._node(box_id)
        if box_id not in self._ready and box_id not in self._fresh:
            await node.call("ready", box_id, timeout=self.o.create_timeout)
            self._ready.add(box_id)

    async def exec(self, box_id: str, request: ExecRequest) -> StartedExec:
        u = self._unborn.get(box_id)
        if u is not None and u.making is None:
            self._check_open()
            channel = await self._making(box_id, u, self._exec_unborn(box_id, u, request))
        else:
            node, box_id = await self._node(box_id)
            channel = RayChannel(node, uuid.uuid4().hex, box_id, request, self.o.exec_wait)
            try:
                await channel.start(self.o.create_timeout)
            except BaseException:
                self._ready.discard(box_id)
                raise
        self._fresh.discard(box_id)
        self._ready.add(box_id)
        return StartedExec(channel, channel.exec_id)

    async def _exec_unborn(self, box_id: str, u: _Unborn, request: ExecRequest) -> RayChannel:
        """The first command of an unborn box: one call makes the box on its node and runs it."""
        refused: set[str] = set()
        while True:
            create = (u.options, self.o.max_boxes_per_node)
            channel = RayChannel(self._service(u.node_id), uuid.uuid4().hex, box_id, request, self.o.exec_wait, create)
            try:
                await channel.start(self.o.create_timeout)
            except ResourceExhaustedError:
                if not channel.create_failed:
                    self._made(box_id)
                    raise
                refused.add(u.node_id)
                await self._replace(box_id, u, refused)
                continue
            except BoxliteError:
                if not channel.create_failed:  # made; its command failed
                    self._made(box_id)
                raise
            except BaseException:
                self._made(box_id)  # lost on the way (node gone, cancelled): as if made
                raise
            self._made(box_id, channel.created)
            return channel

    async def copy_in(
        self, box_id: str, chunks: AsyncIterable[bytes], dest: str, name: str, include_parent: bool,
        overwrite: bool = True,
    ) -> None:  # fmt: skip
        node, box_id = await self._node(box_id)
        limit = self.o.max_transfer_bytes
        upload = await node.call_raw("copy_in_open", box_id, dest, name, include_parent, overwrite, limit)
        try:
            async for chunk in chunks:
                for i in range(0, len(chunk), CHUNK):
                    await node.call_raw("copy_in_chunk", upload, bytes(chunk[i : i + CHUNK]), timeout=None)
        except BaseException:
            try:
                await node.call_raw("copy_in_abort", upload)
            except BoxliteError:
                pass
            raise
        await node.call_raw("copy_in_close", upload, timeout=None)

    async def copy_out(self, box_id: str, src: str, name: str, follow_symlinks: bool) -> AsyncGenerator[bytes, None]:
        node, box_id = await self._node(box_id)
        gen = node.stream("copy_out", box_id, src, name, follow_symlinks, self.o.max_transfer_bytes)
        finished = False
        step: asyncio.Future[Any] | None = None  # the next chunk, awaited across pings (never cancelled)
        try:
            while True:
                step = step or asyncio.ensure_future(gen.__anext__())
                done, _ = await asyncio.wait({step}, timeout=self.o.ping_interval)
                if not done:
                    await node.ping()  # a slow tar is fine, a lost node is not
                    continue
                taken, step = step, None
                try:
                    ref = taken.result()
                except StopAsyncIteration:
                    break
                except BoxliteError:
                    raise
                except Exception as e:
                    raise node.died(e) from None
                yield await node._await(ref, self.o.call_timeout)
            finished = True
        finally:
            if step is not None:
                step.cancel()
            if not finished:
                try:
                    _ray().cancel(gen)
                except Exception:  # already ended, or the node is gone
                    pass

    async def box_metrics(self, box_id: str, counted: ExecCounters) -> BoxMetrics:
        node, box_id = await self._node(box_id)
        metrics: BoxMetrics = await node.call("box_metrics", box_id)
        return dataclasses.replace(
            metrics, commands_executed_total=counted.commands, exec_errors_total=counted.errors,
            bytes_sent_total=counted.bytes_sent, bytes_received_total=counted.bytes_received,
        )  # fmt: skip

    async def metrics(self, counted: ExecCounters) -> RuntimeMetrics:
        self._check_open()
        refs = await self.nodes()
        parts = await asyncio.gather(*(r.call("metrics") for r in refs), return_exceptions=True)
        total = RuntimeMetrics(total_commands_executed=counted.commands, total_exec_errors=counted.errors)
        for m in parts:
            if isinstance(m, RuntimeMetrics):
                total.boxes_created_total += m.boxes_created_total
                total.boxes_failed_total += m.boxes_failed_total
                total.num_running_boxes += m.num_running_boxes
        return total

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop the non-detached boxes this driver created (the node services keep running)."""
        if self._closed:
            return
        for box_id in list(self._owned):
            if box_id in self._unborn and self._unborn[box_id].making is None:
                self._drop_unborn(box_id)  # never made: nothing to stop
                continue
            try:
                await self.stop(box_id, timeout)
            except BoxliteError:  # gone, or its node is lost
                pass
        self._closed = True


def _lost(info: BoxInfo) -> BoxInfo:
    state = dataclasses.replace(info.state, status=LOST, running=False, pid=None)
    return dataclasses.replace(info, state=state)
