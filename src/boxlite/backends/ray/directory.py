"""The cluster's box directory: box -> node, so every driver finds any box and sees lost ones.

One detached Ray actor (``boxlite-directory`` in the node services' namespace, pinned to the head
node: it lives as long as the cluster's control plane). The node services write it (their boxes,
after every change and every ``FULL_SYNC_SECS``); drivers read it to route a box they do not
know and to show the boxes of a node that is gone as ``lost``. It is a hint, never the truth: a
driver that misses there asks every node service, and a node service's answer wins.

A node that comes back on the same home (a new Ray node id, same host and ``BOXLITE_HOME``)
replaces the entries of the node it succeeds: boxes that did not survive are no longer listed.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

from ...api.results import BoxInfo

NAME = "boxlite-directory"
MAX_ENTRIES = 100_000
"""Boxes the directory holds at most (about 100 MB); beyond, new boxes are found by asking every
node service instead (a node service with a runaway box count cannot grow the actor without bound)."""
FULL_SYNC_SECS = 30.0
"""How often a node service sends its whole box list (repairs a directory that missed updates)."""


@dataclass
class _Entry:
    node_id: str
    info: BoxInfo


class Directory:
    """The actor: entries by box id, an index by name, and each node's home."""

    def __init__(self) -> None:
        self._boxes: dict[str, _Entry] = {}
        self._names: dict[str, str] = {}
        self._homes: dict[str, str] = {}  # node id -> "host:home"

    def _drop(self, box_id: str) -> None:
        entry = self._boxes.pop(box_id, None)
        if entry is not None and entry.info.name and self._names.get(entry.info.name) == box_id:
            del self._names[entry.info.name]

    def _put(self, node_id: str, info: BoxInfo) -> None:
        if info.id not in self._boxes and len(self._boxes) >= MAX_ENTRIES:
            return
        self._drop(info.id)
        self._boxes[info.id] = _Entry(node_id, info)
        if info.name:
            self._names[info.name] = info.id

    def replace(self, node_id: str, home: str, infos: list[BoxInfo] | bytes) -> None:
        """All boxes of ``node_id``; entries of an earlier node on the same home are dropped.
        ``infos`` may come pickled (``node.pack``: cheaper for Ray to carry than the dataclasses)."""
        infos = _unpacked(infos)
        old = {n for n, h in self._homes.items() if h == home} | {node_id}
        for n in old - {node_id}:
            del self._homes[n]
        self._homes[node_id] = home
        for box_id in [b for b, e in self._boxes.items() if e.node_id in old]:
            self._drop(box_id)
        for info in infos:
            self._put(node_id, info)

    def update(self, node_id: str, infos: list[BoxInfo] | bytes, removed: list[str]) -> None:
        """Boxes of ``node_id`` that changed (maybe pickled, as for ``replace``), and ids it no longer has."""
        infos = _unpacked(infos)
        for box_id in removed:
            if (entry := self._boxes.get(box_id)) is not None and entry.node_id == node_id:
                self._drop(box_id)
        for info in infos:
            self._put(node_id, info)

    def lookup(self, id_or_name: str) -> tuple[str, BoxInfo] | None:
        entry = self._boxes.get(id_or_name) or self._boxes.get(self._names.get(id_or_name, ""))
        return None if entry is None else (entry.node_id, entry.info)

    def entries(self, except_nodes: list[str]) -> list[tuple[str, BoxInfo]]:
        """Every box whose node is not in ``except_nodes`` (the ones a driver heard from itself)."""
        skip = set(except_nodes)
        return [(e.node_id, e.info) for e in self._boxes.values() if e.node_id not in skip]

    def forget(self, box_id: str) -> None:
        """A lost box its owner gave up on (``remove(force=True)`` of a box whose node is gone)."""
        self._drop(box_id)

    def size(self) -> int:
        return len(self._boxes)


def _unpacked(infos: list[BoxInfo] | bytes) -> list[BoxInfo]:
    value = pickle.loads(infos) if isinstance(infos, bytes) else infos
    return [i for i in value if isinstance(i, BoxInfo)] if isinstance(value, list) else []


def head_node_id(nodes: list[dict[str, Any]]) -> str | None:
    """The Ray head node's id (its resources carry ``node:__internal_head__``)."""
    for n in nodes:
        if n.get("Alive") and "node:__internal_head__" in (n.get("Resources") or {}):
            return str(n["NodeID"])
    return None


def open_directory(ray: Any, namespace: str) -> Any:
    """The directory actor's handle, created on first use (detached, on the head node)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    options: dict[str, Any] = {
        "name": NAME, "namespace": namespace, "lifetime": "detached", "get_if_exists": True, "num_cpus": 0,
        "max_restarts": -1,
    }  # fmt: skip
    head = head_node_id(ray.nodes())
    if head is not None:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(head, soft=False)
    return ray.remote(Directory).options(**options).remote()
