"""The benchmarks still run to completion and report every contender (smallest settings; the
figures themselves are meaningless here). docs/performance.md says what each one compares."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
pytestmark = pytest.mark.slow
requires_qemu = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs qemu-system-x86")


def run_bench(script: str, tmp_path: Path, *args: str, timeout: float = 100) -> dict[str, Any]:
    out = tmp_path / f"{script}.json"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    argv = [sys.executable, str(BENCH / script), "--quick", "--json", str(out), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def rows(report: dict[str, Any], title: str) -> dict[str, dict[str, Any]]:
    matches = [s for s in report["sections"] if s["title"] == title]
    assert matches, [s["title"] for s in report["sections"]]
    section = matches[-1]
    assert len(section["load_before"]) == 3 and len(section["load_after"]) == 3
    return {r["name"]: r for r in section["rows"]}


def measured(row: dict[str, Any]) -> bool:
    return row["n"] >= 1 and row["median"] > 0 and row["min"] <= row["median"] <= row["max"]


def test_core_compares_boxlite_with_crun_runc_bwrap_and_nsenter(tmp_path: Path) -> None:
    report = run_bench("bench_core.py", tmp_path, "--runs", "1")
    start = rows(report, "start + first exec of `true` + teardown")
    assert {"boxlite library", "crun run", "runc run", "bwrap"} <= start.keys()
    assert start["crun run"]["ratio"] is None and start["boxlite library"]["ratio"] > 0  # crun is the peer
    cli = rows(report, "run `true` in a new box, removed after")
    assert {"boxlite run --rm", "crun run"} <= cli.keys()
    exec_procs = rows(report, "exec `true` in a running box (process)")
    assert exec_procs.keys() == {"boxlite exec", "crun exec", "runc exec", "nsenter"}
    assert exec_procs["crun exec"]["ratio"] is None and exec_procs["nsenter"]["ratio"] > 0  # crun exec: the peer
    exec_lib = rows(report, "exec `true` in a running box (library)")
    assert exec_lib.keys() == {"boxlite Box.exec", "subprocess.run (host, no box)"}
    mem = rows(report, "idle box memory, private (USS)")
    for name in (
        "crun container (sleep)",
        "boxlite box processes",
        "boxlite zygote",
        "boxlite lone box, all of the above",
    ):
        assert measured(mem[name]), mem[name]
    everything = [r for s in report["sections"] for r in s["rows"]]
    assert all(measured(r) for r in everything if r["unit"] == "s"), everything


def test_density_prints_latency_and_memory_per_n_and_leaves_no_box(tmp_path: Path) -> None:
    before = {p for p in os.listdir("/proc") if p.isdigit()}
    report = run_bench("bench_density.py", tmp_path, "--counts", "2,3", "--execs", "1")
    lat = rows(report, "exec `true` across N idle boxes")
    assert lat.keys() == {"N=2", "N=3"} and lat["N=3"]["n"] == 3 and lat["N=3"]["p99"] > 0
    mem = rows(report, "private memory (USS) per idle box at N")
    assert mem["N=3"]["boxes_mib"] > 0 and mem["N=3"]["zygote_mib"] > 0
    agents = []
    for pid in {p for p in os.listdir("/proc") if p.isdigit()} - before:
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"boxlite-agent"):
                agents.append(pid)
        except OSError:
            pass
    assert not agents, "density benchmark left boxes running"


def test_density_stops_at_max_boxes(tmp_path: Path) -> None:
    report = run_bench("bench_density.py", tmp_path, "--counts", "2,50", "--max-boxes", "2", "--execs", "1")
    assert rows(report, "exec `true` across N idle boxes").keys() == {"N=2"}


def test_images_compare_with_skopeo_tar_and_umoci_and_report_cache_hits(tmp_path: Path) -> None:
    report = run_bench("bench_images.py", tmp_path, "--images", "busybox")
    cold = rows(report, "busybox: pull + unpack, cold")
    assert cold.keys() == {
        "boxlite create",
        "skopeo copy + tar",
        "skopeo copy + umoci unpack",
        "boxlite ImageManager.resolve",
    }
    assert all(measured(r) for r in cold.values())
    assert cold["boxlite create"]["ratio"] > 0 and cold["boxlite ImageManager.resolve"]["ratio"] is None
    warm = rows(report, "busybox: cache hit (already pulled and unpacked)")
    assert all(measured(r) and r["ratio"] is None for r in warm.values())  # times, never ratios


def test_make_bench_writes_json_and_markdown(tmp_path: Path) -> None:
    argv = [sys.executable, str(BENCH / "run_all.py"), "--quick", "--only", "density", "--max-boxes", "2"]
    proc = subprocess.run([*argv, "--out", str(tmp_path)], capture_output=True, text=True, timeout=100, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "latest.json").read_text())
    assert [b["name"] for b in data["benchmarks"]] == ["density"] and data["benchmarks"][0]["exit_code"] == 0
    md = (tmp_path / "latest.md").read_text()
    assert "| N=2 |" in md and "load" in md
    assert len(list(tmp_path.glob("bench-*.json"))) == 1 and len(list(tmp_path.glob("bench-*.md"))) == 1


@pytest.mark.vm
@requires_qemu
def test_vm_bench_compares_with_plain_qemu(tmp_path: Path) -> None:
    report = run_bench("bench_vm.py", tmp_path, "--idle", "0.5")
    start = rows(report, "start + first exec of `true` + teardown")
    assert {"boxlite (snapshot restore)", "boxlite (cold boot)", "plain QEMU cold boot"} <= start.keys()
    assert all(measured(r) for r in start.values())
    rtt = rows(report, "exec `true` round trip in a running VM box")
    assert measured(rtt["boxlite Box.exec (warm)"])
    mem = rows(report, "idle memory of a lone VM box")
    assert measured(mem["plain QEMU (USS)"]) and measured(mem["boxlite box (USS)"])
