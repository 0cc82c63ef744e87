"""The benchmarks still run to completion and report every contender (smallest settings; the
figures themselves are meaningless here). docs/performance.md says what each one compares."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.hostprocs import processes_with_env

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
pytestmark = pytest.mark.slow
requires_qemu = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs qemu-system-x86")


def run_bench(script: str, tmp_path: Path, *args: str, timeout: float = 100) -> dict[str, Any]:
    out = tmp_path / f"{script}.json"
    # The mark tells this bench's processes from other tests' (a box's keeper and agent inherit it).
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "BOXLITE_TEST_MARK": f"{tmp_path}/"}
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
    assert {"boxlite library", "crun run", "runc run", "bwrap", "boxlite library, default network"} <= start.keys()
    assert start["crun run"]["ratio"] is None and start["boxlite library"]["ratio"] > 0  # crun is the peer
    cli = rows(report, "run `true` in a new box, removed after")
    assert {"boxlite run --rm", "crun run"} <= cli.keys()
    exec_procs = rows(report, "exec `true` in a running box (process)")
    assert exec_procs.keys() == {"boxlite exec", "crun exec", "runc exec", "nsenter"}
    assert exec_procs["crun exec"]["ratio"] is None and exec_procs["nsenter"]["ratio"] > 0  # crun exec: the peer
    exec_lib = rows(report, "exec `true` in a running box (library)")
    assert exec_lib.keys() == {"boxlite Box.exec", "subprocess.run (host, no box)"}
    size = rows(report, "start + first exec + teardown by rootfs size")
    assert size.keys() == {
        "boxlite library, busybox rootfs",
        "boxlite library, + 2,000 files",
        "crun run, + 2,000 files",
        "fingerprint walk of the + 2,000 tree",
    }
    assert size["crun run, + 2,000 files"]["ratio"] is None  # the peer
    writes = rows(report, "start + first exec + teardown while another process writes")
    assert writes.keys() == {
        "boxlite library, removed when it stops",
        "boxlite library, a box kept after it stops (stop + remove)",
        "crun run",
    }
    assert all(measured(row) for row in writes.values()) and writes["crun run"]["ratio"] is None
    mem = rows(report, "idle box memory, private (USS)")
    for name in (
        "crun container (sleep)",
        "boxlite box processes",
        "boxlite box processes, default network",
        "boxlite zygote",
        "boxlite lone box, all of the above",
    ):
        assert measured(mem[name]), mem[name]
    everything = [r for s in report["sections"] for r in s["rows"]]
    assert all(measured(r) for r in everything if r["unit"] == "s"), everything


def test_density_prints_latency_and_memory_per_n_and_leaves_no_box(tmp_path: Path) -> None:
    report = run_bench("bench_density.py", tmp_path, "--counts", "2,3", "--execs", "1")
    lat = rows(report, "exec `true` across N idle boxes")
    assert lat.keys() == {"N=2", "N=3"} and lat["N=3"]["n"] == 3 and lat["N=3"]["p99"] > 0
    mem = rows(report, "private memory (USS) per idle box at N")
    assert mem["N=3"]["boxes_mib"] > 0 and mem["N=3"]["zygote_mib"] > 0
    # A box's keeper finishes its clean-up just after its removal returned.
    deadline = time.monotonic() + 10
    while left := processes_with_env(f"BOXLITE_TEST_MARK={tmp_path}/".encode()):
        assert time.monotonic() < deadline, f"density benchmark left box processes running: {left}"
        time.sleep(0.1)


def test_density_stops_at_max_boxes(tmp_path: Path) -> None:
    report = run_bench("bench_density.py", tmp_path, "--counts", "2,50", "--max-boxes", "2", "--execs", "1")
    assert rows(report, "exec `true` across N idle boxes").keys() == {"N=2"}


def test_images_compare_with_skopeo_tar_and_umoci_and_report_cache_hits(tmp_path: Path) -> None:
    report = run_bench("bench_images.py", tmp_path, "--images", "busybox")
    cold = rows(report, "busybox: pull + unpack, cold")
    assert cold.keys() == {
        "boxlite pull",
        "boxlite create",
        "skopeo copy + tar",
        "skopeo copy + umoci unpack",
        "boxlite ImageManager.resolve",
    }
    assert all(measured(r) for r in cold.values())
    assert cold["boxlite pull"]["ratio"] > 0 and cold["boxlite create"]["ratio"] > 0
    assert cold["boxlite ImageManager.resolve"]["ratio"] is None
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
    teardown = rows(report, "teardown of a running VM box")
    assert len(teardown) == 3 and all(measured(r) for r in teardown.values())
    mem = rows(report, "idle memory of a lone VM box")
    assert measured(mem["plain QEMU (USS)"]) and measured(mem["boxlite box (USS)"])


STATE_SECTIONS = {
    "copy of a stopped box: clone vs cp -a": ("clone (stopped box)", "cp -a --reflink=auto of the box dir"),
    "box to an archive: export vs tar": ("export (.boxlite, uncompressed)", "tar -S -cf of the box dir"),
    "archive to a box: import vs untar": ("import", "tar -xf of that tar"),
    "round trip: export + import vs tar + untar": ("export + import", "tar -S -cf + tar -xf"),
}


def check_state(report: dict[str, Any], engine: str) -> None:
    """Every BoxLite operation is measured and divided by its cp/tar peer on the same box dir."""
    suffix = f", 1 MB written ({engine} engine)"
    snap = rows(report, "snapshot create of the stopped box" + suffix)
    assert snap.keys() == {"snapshot create"} and measured(snap["snapshot create"])
    for title, (ours, peer) in STATE_SECTIONS.items():
        section = rows(report, title + suffix)
        assert {ours, peer} <= section.keys(), section.keys()
        assert measured(section[ours]) and measured(section[peer])
        assert section[peer]["ratio"] is None and section[ours]["ratio"] > 0  # the cp/tar process is the peer
    archive = rows(report, "box to an archive: export vs tar" + suffix)["archive size (.boxlite)"]
    assert archive["median"] >= 1 and archive["ratio"] is None  # the written MB is in the archive


def test_state_compares_snapshot_clone_export_import_with_cp_and_tar(tmp_path: Path) -> None:
    check_state(run_bench("bench_state.py", tmp_path, "--mib", "1", "--engines", "namespace"), "namespace")


@pytest.mark.vm
@requires_qemu
def test_state_bench_runs_on_the_vm_engine(tmp_path: Path) -> None:
    check_state(run_bench("bench_state.py", tmp_path, "--mib", "1", "--engines", "vm"), "vm")


def check_pause(report: dict[str, Any], engine: str) -> None:
    """Box.pause/resume are divided by the engine's own freeze/thaw (the floor they wrap)."""
    pause = rows(report, f"pause, memory kept ({engine} engine)")
    assert pause.keys() == {"Box.pause()", "engine freeze"}
    resume = rows(report, f"resume, memory kept ({engine} engine)")
    assert resume.keys() == {"Box.resume()", "engine thaw", "first exec after Box.resume()"}
    for section, ours, floor in ((pause, "Box.pause()", "engine freeze"), (resume, "Box.resume()", "engine thaw")):
        assert all(measured(r) and r["n"] == 2 for r in section.values()), section  # --quick: 2 runs
        assert section[floor]["ratio"] is None and section[ours]["ratio"] > 0
    assert resume["first exec after Box.resume()"]["ratio"] is None  # a breakdown, not a contender


def test_pause_bench_compares_with_the_engine_freeze_namespace(tmp_path: Path) -> None:
    report = run_bench("bench_pause.py", tmp_path, "--engines", "namespace")
    check_pause(report, "namespace")
    assert not [s for s in report["sections"] if "vm engine" in s["title"]]


@pytest.mark.vm
@requires_qemu
def test_pause_bench_vm_measures_to_disk_and_fork(tmp_path: Path) -> None:
    report = run_bench("bench_pause.py", tmp_path, "--engines", "vm", timeout=110)
    check_pause(report, "vm")
    disk = rows(report, "pause to disk and resume from it (vm engine)")
    assert disk.keys() == {
        "Box.pause(to_disk=True)",
        "Box.resume() from the saved state",
        "saved state file (allocated)",
    }
    assert all(measured(r) for r in disk.values()), disk
    fork = rows(report, "fork(1) to the first exec in the copy (vm engine)")
    assert measured(fork["Box.fork(1) + exec `true` in the copy"])


def check_net(tmp_path: Path, engine: str, timeout: float = 100) -> None:
    """Both box configurations are measured against host loopback (bulk) and the host's veth (connects)."""
    from support.images import python_rootfs

    python_rootfs()  # the cached image the benchmark's boxes run (built here, outside its timeout)
    report = run_bench("bench_net.py", tmp_path, "--mib", "4", "--engine", engine, timeout=timeout)
    bulk = rows(report, f"bulk HTTP download of 4 MiB, one connection ({engine} engine)")
    boxes = {"box, unrestricted", "box, allow_net", "box, secret proxy (pass-through)"}
    if engine == "namespace":  # the secret proxy's fast path against its host path
        boxes.add("box, secret proxy, host path (no fast path)")
    assert bulk.keys() == {"host loopback", "host → remote (veth)"} | boxes
    assert all(measured(r) and r["unit"] == "MiB/s" for r in bulk.values()), bulk
    assert bulk["host loopback"]["ratio"] is None and all(bulk[n]["ratio"] > 0 for n in bulk if n != "host loopback")
    ping = rows(report, f"TCP connect + 1-byte reply, to the remote host ({engine} engine)")
    assert ping.keys() == {"host → remote (veth)", "box, unrestricted", "box, allow_net"}
    assert all(measured(r) and r["n"] == 20 for r in ping.values()), ping  # --quick: 1 run x 20 connects
    assert ping["host → remote (veth)"]["ratio"] is None and ping["box, allow_net"]["ratio"] > 0


def test_net_bench_compares_box_paths_with_host_loopback_and_veth(tmp_path: Path) -> None:
    check_net(tmp_path, "namespace")


@pytest.mark.vm
@requires_qemu
def test_net_bench_runs_on_the_vm_engine(tmp_path: Path) -> None:
    check_net(tmp_path, "vm", timeout=110)


def test_make_bench_runs_the_state_benchmark(tmp_path: Path) -> None:
    argv = [sys.executable, str(BENCH / "run_all.py"), "--quick", "--only", "state", "--out", str(tmp_path)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=100, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "latest.json").read_text())
    assert [(b["name"], b["exit_code"]) for b in data["benchmarks"]] == [("state", 0)]
    assert "| clone (stopped box) |" in (tmp_path / "latest.md").read_text()


@pytest.fixture
def ab_alone() -> Iterator[None]:
    """The A/B tests one at a time (an exclusive lock, whichever worker runs them): each checks
    that no worktree of the bench is left in the repository, which the other's run has while it lasts."""
    with open(Path(tempfile.gettempdir()) / "boxlite-bench-ab-test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.mark.usefixtures("ab_alone")
def test_ab_bench_times_two_revisions_interleaved(tmp_path: Path) -> None:
    report = run_bench("bench_ab.py", tmp_path, "--runs", "1", "--base", "HEAD", timeout=300)
    assert report["info"] == {"base": "HEAD", "head": "working tree"}
    for title in (
        "library: create → exec(true) → remove",
        "library, default network (pasta): create → exec(true) → remove",
        "boxlite run --rm --rootfs R true",
        "boxlite exec BOX true",
    ):
        timed = rows(report, title)
        assert timed.keys() == {"base HEAD", "head working tree"}
        assert timed["base HEAD"]["ratio"] is None and timed["head working tree"]["ratio"] > 0
        assert all(measured(row) for row in timed.values())
    worktrees = subprocess.run(["git", "-C", str(REPO), "worktree", "list"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in worktrees and "boxlite-bench-ab-" not in worktrees  # removed again


@pytest.mark.usefixtures("ab_alone")
@pytest.mark.vm
@requires_qemu
def test_ab_bench_times_the_vm_engine_with_each_revisions_artifact(tmp_path: Path) -> None:
    report = run_bench("bench_ab.py", tmp_path, "--runs", "1", "--base", "HEAD", "--vm", timeout=600)
    for title in (
        "library, VM engine (snapshot restore): create → exec(true) → remove",
        "library, VM engine: fork(1) of a running box → exec(true) in the copy",
    ):
        timed = rows(report, title)
        assert timed.keys() == {"base HEAD", "head working tree"}
        assert all(measured(row) for row in timed.values())
