"""bench/bench_cluster.py runs to completion with the smallest N (taken from the environment, as
`make bench` users set it) and reports both runtimes, the cluster's targets and no leftovers
(the benchmark fails when a process of the Ray cluster it started outlives it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
LOCAL, CLUSTER = "local runtime", "cluster runtime (Ray, 2 nodes)"


def test_cluster_bench_compares_the_cluster_runtime_with_the_local_one(tmp_path: Path) -> None:
    out = tmp_path / "cluster.json"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "BOXLITE_BENCH_CLUSTER_N": "2"}
    env.pop("RAY_ADDRESS", None)
    argv = [sys.executable, str(REPO / "bench" / "bench_cluster.py"), "--quick", "--json", str(out)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    sections = {s["title"]: s for s in report["sections"]}
    create = sections["create + start N=2 boxes, 4 at a time"]
    lat = sections["exec `true` in each of N=2 running boxes"]
    for section, unit, n in ((create, "boxes/s", 1), (lat, "s", 2)):
        rows = {r["name"]: r for r in section["rows"]}
        assert rows.keys() == {LOCAL, CLUSTER} and section["baseline"] == LOCAL
        assert all(r["unit"] == unit and r["n"] == n and r["median"] > 0 for r in rows.values()), rows
        assert rows[LOCAL]["ratio"] is None and rows[CLUSTER]["ratio"] > 0
        assert len(section["load_before"]) == 3 and len(section["load_after"]) == 3
    assert any("target <= 5 ms" in note for note in lat["notes"])
    assert any("target >= 0.8" in note for note in create["notes"])
    figures = report["info"]["N=2"]
    assert isinstance(figures["targets_met"], bool) and figures["create_throughput_ratio"] > 0
    assert report["info"]["cluster"]["started_here"] is True
