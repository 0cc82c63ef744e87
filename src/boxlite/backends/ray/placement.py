"""Choosing a node for a new box: by its cpus/memory against each node's Ray resources."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import ConfigError, ResourceExhaustedError

STRATEGIES = ("spread", "pack")


@dataclass
class NodeLoad:
    """What a node offers (its Ray ``CPU``/``memory`` resources) and what its boxes take."""

    node_id: str
    cpus: float
    memory_mib: int
    boxes: int = 0
    used_cpus: float = 0.0
    used_memory_mib: int = 0

    def fits(self, cpus: float, memory_mib: int, max_boxes: int, overcommit: float) -> bool:
        return (
            self.boxes < max_boxes
            and self.used_cpus + cpus <= self.cpus * overcommit + 1e-9
            and self.used_memory_mib + memory_mib <= self.memory_mib * overcommit
        )


def choose(
    loads: list[NodeLoad], cpus: float, memory_mib: int, strategy: str, max_boxes: int, overcommit: float
) -> NodeLoad:
    """The node for a box: ``spread`` takes the least loaded, ``pack`` the most loaded that fits."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"placement strategy must be one of {STRATEGIES}, not {strategy!r}")
    fitting = [n for n in loads if n.fits(cpus, memory_mib, max_boxes, overcommit)]
    if not fitting:
        raise ResourceExhaustedError(
            f"no Ray node has room for a box of {cpus:g} cpus and {memory_mib} MiB "
            f"({len(loads)} nodes, at most {max_boxes} boxes each, overcommit {overcommit:g})"
        )

    def key(n: NodeLoad) -> tuple[float, float, str]:
        return (n.boxes, n.used_cpus / max(n.cpus, 1e-9), n.node_id)

    return min(fitting, key=key) if strategy == "spread" else max(fitting, key=key)
