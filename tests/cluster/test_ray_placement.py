"""Placement of boxes on Ray nodes (no cluster needed) and ``Boxlite.ray``'s option checks."""

from __future__ import annotations

import pytest

import boxlite
from boxlite.backends.ray.placement import NodeLoad, choose
from boxlite.errors import ConfigError, ResourceExhaustedError


def _nodes() -> list[NodeLoad]:
    return [
        NodeLoad("a", cpus=4, memory_mib=4096, boxes=2, used_cpus=2, used_memory_mib=1024),
        NodeLoad("b", cpus=4, memory_mib=4096, boxes=0),
        NodeLoad("c", cpus=2, memory_mib=1024, boxes=1, used_cpus=1, used_memory_mib=512),
    ]


def test_spread_takes_the_least_loaded_node() -> None:
    assert choose(_nodes(), 1, 512, "spread", 64, 1.0).node_id == "b"


def test_pack_fills_the_most_loaded_node_that_fits() -> None:
    assert choose(_nodes(), 1, 512, "pack", 64, 1.0).node_id == "a"
    assert choose(_nodes(), 3, 512, "pack", 64, 1.0).node_id == "b"  # a has 2 of 4 cpus left


def test_limits_cpus_memory_and_box_count() -> None:
    assert choose(_nodes(), 1, 512, "pack", 2, 1.0).node_id == "c"  # a is at the per-node box limit
    with pytest.raises(ResourceExhaustedError):
        choose(_nodes(), 5, 512, "spread", 64, 1.0)  # no node has 5 cpus
    with pytest.raises(ResourceExhaustedError):
        choose(_nodes(), 1, 8192, "spread", 64, 1.0)
    assert choose(_nodes(), 5, 512, "spread", 64, 2.0).node_id == "b"  # overcommitted
    with pytest.raises(ResourceExhaustedError):
        choose([], 1, 512, "spread", 64, 1.0)


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        choose(_nodes(), 1, 512, "random", 64, 1.0)
    with pytest.raises(ConfigError):
        boxlite.Boxlite.ray("127.0.0.1:1", strategy="random")
    with pytest.raises(ConfigError):
        boxlite.Boxlite.ray("127.0.0.1:1", max_boxes_per_node=0)
    with pytest.raises(ConfigError):
        boxlite.Boxlite.ray("127.0.0.1:1", no_such_option=1)


def test_boxlite_cluster_is_the_ray_runtime() -> None:
    """``boxlite.cluster(...)`` takes ``Boxlite.ray``'s address and options (and checks them alike)."""
    import inspect

    assert inspect.signature(boxlite.cluster).parameters.keys() == {"address", "options"}
    with pytest.raises(ConfigError, match="strategy"):
        boxlite.cluster("127.0.0.1:1", strategy="random")
    with pytest.raises(ConfigError):
        boxlite.cluster("127.0.0.1:1", no_such_option=1)
