"""Run every benchmark (`make bench`) and write one JSON + one markdown report.

    python bench/run_all.py [--quick] [--runs N] [--only core,density,images,vm,state,pause,net,cluster]
                            [--max-boxes N] [--out DIR]

Each benchmark runs as its own process (its memory figures must not include another's); the
reports land in bench/results/bench-<UTC time>.{json,md}, copied to latest.{json,md}. Exit
status 1 when any benchmark failed (the others still run and are reported).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import benchlib as bl

HERE = Path(__file__).resolve().parent
BENCHES = {
    "core": "bench_core.py",
    "density": "bench_density.py",
    "images": "bench_images.py",
    "vm": "bench_vm.py",
    "state": "bench_state.py",
    "pause": "bench_pause.py",
    "net": "bench_net.py",
    "cluster": "bench_cluster.py",
    "special": "bench_special.py",
}


PEERS = ("crun", "runc", "bwrap", "skopeo", "umoci", "qemu-system-x86_64", "cp", "tar", "pasta")


def versions() -> dict[str, str]:
    """First line of ``--version`` of every peer (versions change the figures)."""
    out = {}
    for tool in PEERS:
        try:
            proc = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=10)
            out[tool] = (proc.stdout or proc.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            out[tool] = "missing"
    return out


def memory_cgroups() -> int | None:
    """Memory cgroups on the host, dying ones included (``/proc/cgroups``): thousands left by
    earlier runs slow cgroup work a little (docs/performance.md)."""
    try:
        with open("/proc/cgroups") as f:
            for line in f:
                fields = line.split()
                if fields and fields[0] == "memory":
                    return int(fields[2])
    except (OSError, ValueError, IndexError):
        pass
    return None


def proactive_pageout() -> bool:
    """True when a running DAMON scheme pages out cold memory by itself: files a benchmark read a
    while ago may come from disk again, and timings move with it."""
    for kdamond in Path("/sys/kernel/mm/damon/admin/kdamonds").glob("*"):
        try:
            if (kdamond / "state").read_text().strip() != "on":
                continue
            actions = (a.read_text().strip() for a in kdamond.glob("contexts/*/schemes/*/action"))
            if "pageout" in actions:
                return True
        except OSError:
            continue
    return False


def machine() -> dict[str, object]:
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    commit = subprocess.run(
        ["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(HERE.parent), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": commit + ("+dirty" if dirty else ""),
        "peers": versions(),
        "load_before": bl.loadavg(),
        "memory_cgroups": memory_cgroups(),
        "proactive_pageout": proactive_pageout(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run of every benchmark")
    ap.add_argument("--runs", type=int, help="samples per contender (each benchmark has its own default)")
    ap.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset of: " + ", ".join(BENCHES))
    ap.add_argument("--max-boxes", type=int, help="density: stop the curve above this N")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - set(BENCHES)
    if unknown:
        ap.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    result: dict[str, object] = {"started": stamp, "quick": args.quick, "machine": machine(), "benchmarks": []}
    failed = []
    t0 = time.monotonic()
    for name in names:
        part = args.out / f".{stamp}-{name}.json"
        argv = [sys.executable, str(HERE / BENCHES[name]), "--json", str(part)]
        argv += ["--quick"] if args.quick else []
        argv += ["--runs", str(args.runs)] if args.runs else []
        argv += ["--max-boxes", str(args.max_boxes)] if args.max_boxes and name == "density" else []
        print(f"==> {name}: {' '.join(argv[1:])}", file=sys.stderr, flush=True)
        t = time.monotonic()
        rc = subprocess.run(argv, cwd=HERE.parent).returncode
        entry: dict[str, object] = {"name": name, "exit_code": rc, "seconds": round(time.monotonic() - t, 1)}
        if rc == 0 and part.exists():
            entry["report"] = json.loads(part.read_text())
        else:
            failed.append(name)
        part.unlink(missing_ok=True)
        result["benchmarks"].append(entry)  # type: ignore[attr-defined]
    result["seconds"] = round(time.monotonic() - t0, 1)
    result["load_after"] = bl.loadavg()
    md = markdown(result)
    json_path, md_path = args.out / f"bench-{stamp}.json", args.out / f"bench-{stamp}.md"
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    md_path.write_text(md)
    shutil.copyfile(json_path, args.out / "latest.json")
    shutil.copyfile(md_path, args.out / "latest.md")
    print(f"\nwrote {json_path} and {md_path} ({result['seconds']} s)", file=sys.stderr)
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def markdown(result: dict[str, object]) -> str:
    m = result["machine"]
    assert isinstance(m, dict)
    out = [
        f"## BoxLite benchmarks, {result['started']}{' (quick: smoke figures only)' if result['quick'] else ''}\n",
        f"{m['cpus']} CPUs, {m['memory_gib']} GiB, Linux {m['kernel']}, Python {m['python']}, commit {m['commit']}; "
        f"load {bl.fmt_load(m['load_before'])} before, {bl.fmt_load(result['load_after'])} after "  # type: ignore[arg-type]
        f"({result['seconds']} s in all); memory cgroups at the start {m.get('memory_cgroups')} (dying included)"
        + ("; the kernel pages out cold memory by itself (DAMON)" if m.get("proactive_pageout") else "")
        + ".\n",
        "Peers: " + "; ".join(str(v) for v in m["peers"].values()) + ".\n",  # type: ignore[attr-defined]
    ]
    for entry in result["benchmarks"]:  # type: ignore[attr-defined]
        if "report" in entry:
            out.append(bl.report_markdown(entry["report"]))
        else:
            out.append(f"### {entry['name']}: FAILED (exit {entry['exit_code']})\n")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
