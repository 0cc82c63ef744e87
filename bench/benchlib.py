"""Shared helpers of the benchmarks: interleaved timing, spread, load average, process memory,
OCI bundles for crun/runc, and the report every benchmark prints and saves (JSON + markdown).

Rules every benchmark follows (docs/performance.md):
* contenders of one comparison run interleaved, ABCD then DCBA, so drift in machine load hits
  them alike;
* every figure is a median with its min/max and inter-quartile range, and each comparison
  prints the load average before and after it;
* a ratio is only printed between like and like (library call vs library call, whole process
  vs whole process, teardown on both sides or on neither).
"""

from __future__ import annotations

import argparse
import array
import ctypes
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _p in (str(ROOT / "tests"), str(ROOT / "src")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from support.hostprocs import process_tree as descendants  # noqa: E402, F401  (re-exported; tests/ is on sys.path now)

BENCH_TAG_ENV = "BOXLITE_BENCH_TAG"
"""Set in the benchmark's environment: the runtime's zygote inherits it, so it can be told from
the zygotes of other runtimes on the machine."""

# ---------------------------------------------------------------------------------------------
# statistics and timing
# ---------------------------------------------------------------------------------------------


def summarize(samples: list[float]) -> dict[str, float]:
    """median, min, max, p25, p75 (the inter-quartile range is p25..p75) and n."""
    xs = sorted(samples)
    if not xs:
        return {"n": 0}
    q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0]] * 3
    return {"n": len(xs), "median": statistics.median(xs), "min": xs[0], "max": xs[-1], "p25": q[0], "p75": q[2]}


def percentile(samples: list[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 50 samples is the largest but none)."""
    xs = sorted(samples)
    k = max(0, min(len(xs) - 1, round(pct / 100 * len(xs) + 0.5) - 1))
    return xs[k]


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def interleaved(contenders: dict[str, Callable[[], float]], runs: int) -> dict[str, list[float]]:
    """Run every contender ``runs`` times, ABCD then DCBA...; each returns its own timed seconds
    (so set-up and clean-up can stay outside its timer)."""
    names = list(contenders)
    out: dict[str, list[float]] = {n: [] for n in names}
    for i in range(runs):
        for name in names if i % 2 == 0 else reversed(names):
            out[name].append(contenders[name]())
    return out


def time_process(argv: list[str], env: dict[str, str] | None = None, check: bool = True) -> float:
    """Wall time of one whole process, output discarded."""
    t = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t
    if check and proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-400:]}")
    return dt


# ---------------------------------------------------------------------------------------------
# process memory
# ---------------------------------------------------------------------------------------------


def smaps_kib(pid: int) -> dict[str, int]:
    """USS (Private_Clean + Private_Dirty), its dirty part, PSS and RSS of one process, KiB (0s
    if it is gone)."""
    vals = {"uss": 0, "dirty": 0, "pss": 0, "rss": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Private_Clean", "Private_Dirty", "Private_Hugetlb"):
                    vals["uss"] += int(rest.split()[0])
                    if key != "Private_Clean":
                        vals["dirty"] += int(rest.split()[0])
                elif key == "Pss":
                    vals["pss"] += int(rest.split()[0])
                elif key == "Rss":
                    vals["rss"] += int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return vals


async def exec_true_latencies(boxes: Iterable[Any], repeat: int = 1) -> list[float]:
    """Seconds of ``exec("true")`` + wait, ``repeat`` times in each box, in a shuffled order, one at a time."""
    order = [box for box in boxes for _ in range(repeat)]
    random.shuffle(order)
    out = []
    for box in order:
        t = time.perf_counter()
        await (await box.exec("true", stdin=False)).wait()
        out.append(time.perf_counter() - t)
    return out


def resident_zero_kib(pid: int) -> int:
    """KiB of ``pid``'s resident private writable pages that hold nothing but zeros: memory a
    process touched (zeroed) without storing anything in it (0 if it is gone)."""
    zero_page, total = bytes(4096), 0
    try:
        with (
            open(f"/proc/{pid}/maps") as maps,
            open(f"/proc/{pid}/pagemap", "rb") as pagemap,
            open(f"/proc/{pid}/mem", "rb", buffering=0) as mem,
        ):
            for line in maps:
                fields = line.split()
                if fields[1] != "rw-p":
                    continue
                start, end = (int(x, 16) for x in fields[0].split("-"))
                pagemap.seek(start // 4096 * 8)
                entries = pagemap.read((end - start) // 4096 * 8)
                for i in range(len(entries) // 8):
                    if not entries[i * 8 + 7] & 0x80:  # bit 63: present
                        continue
                    mem.seek(start + i * 4096)
                    if mem.read(4096) == zero_page:
                        total += 4
    except (OSError, ValueError):
        pass
    return total


def memory_of(pids: Iterable[int]) -> dict[str, int]:
    """KiB of a set of processes: ``uss`` the pages they map and no other process does (what
    their exit frees: :func:`unique_kib`), ``dirty``, ``pss`` and ``rss`` summed per process."""
    pids = set(pids)
    total = {"uss": 0, "dirty": 0, "pss": 0, "rss": 0}
    for pid in pids:
        for k, v in smaps_kib(pid).items():
            total[k] += v
    if len(pids) > 1:  # one process: its own USS is that already
        total["uss"] = unique_kib(pids)
    return total


PAGEMAP_PRESENT = 1 << 63
PAGEMAP_PFN = (1 << 55) - 1
PAGEMAP_CHUNK = 1 << 16  # entries read per pread (512 KiB)


def unique_kib(pids: Iterable[int]) -> int:
    """KiB of resident pages mapped only by ``pids``: a page whose mappings (``/proc/kpagecount``)
    all belong to the set. A sum of per-process USS misses the pages two of them share and no
    one else does (an agent and the spawner it forked, boxes forked from one zygote); smaps
    counts a page private only while one process maps it. Needs root (page frame numbers)."""
    seen: dict[int, int] = {}  # page frame -> mappings of it within the set
    for pid in set(pids):
        try:
            _count_frames(pid, seen)
        except OSError:  # it exited: nothing of it is resident any more
            pass
    page_kib = os.sysconf("SC_PAGE_SIZE") // 1024
    fd = os.open("/proc/kpagecount", os.O_RDONLY)
    try:
        return page_kib * sum(
            1 for frame, n in seen.items() if frame and int.from_bytes(os.pread(fd, 8, frame * 8), "little") == n
        )
    finally:
        os.close(fd)


def _count_frames(pid: int, seen: dict[int, int]) -> None:
    page = os.sysconf("SC_PAGE_SIZE")
    ranges, current = [], None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(None, 1)[0]
            if not head.endswith(":"):  # a mapping's first line: "start-end perms ..."
                start, end = head.split("-")
                current = (int(start, 16), int(end, 16))
            elif head == "Rss:" and current is not None and line.split()[1] != "0":
                ranges.append(current)
    fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    try:
        for start, end in ranges:
            for at in range(start // page, end // page, PAGEMAP_CHUNK):
                count = min(PAGEMAP_CHUNK, end // page - at)
                entries = array.array("Q", os.pread(fd, 8 * count, 8 * at))
                for entry in entries:
                    if entry & PAGEMAP_PRESENT:
                        frame = entry & PAGEMAP_PFN
                        seen[frame] = seen.get(frame, 0) + 1
    finally:
        os.close(fd)


def process_name(pid: int) -> str:
    """The process's ``comm`` ("" if it is gone)."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def parent_pid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def zygotes() -> list[int]:
    """This process's namespace-engine zygote(s). Box keepers are forks of the zygote and keep its
    command line, but their parent is not this process."""
    return [p for p in tagged_processes("agent.zygote") if parent_pid(p) == os.getpid()]


def tagged_processes(marker: str) -> list[int]:
    """Processes whose command line contains ``marker`` and whose environment has this
    benchmark's tag (see BENCH_TAG_ENV)."""
    tag = f"{BENCH_TAG_ENV}={os.environ.get(BENCH_TAG_ENV, '')}".encode()
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if marker.encode() not in f.read():
                    continue
            with open(f"/proc/{name}/environ", "rb") as f:
                if tag in f.read().split(b"\0"):
                    out.append(int(name))
        except OSError:
            continue
    return out


def compile_bytecode() -> None:
    """Compile boxlite's modules as ``pip install`` does: in a source tree whose ``.pyc`` files are
    stale (an editable install used under ``PYTHONDONTWRITEBYTECODE``), every CLI process timed
    would otherwise include the compiler (~40 ms for a dozen changed modules)."""
    import compileall

    import boxlite

    compileall.compile_dir(str(Path(boxlite.__file__).parent), quiet=1)


def tag_environment() -> None:
    os.environ.setdefault(BENCH_TAG_ENV, f"{os.getpid()}-{time.time_ns()}")


# ---------------------------------------------------------------------------------------------
# peers: OCI bundles for crun/runc, and the mount namespace crun needs on this host
# ---------------------------------------------------------------------------------------------


def make_bundle(rootfs: Path, bundle: Path, args: list[str]) -> Path:
    """An OCI bundle (``runc spec`` defaults: pid, net, ipc, uts, mount namespaces) on ``rootfs``."""
    bundle.mkdir(parents=True, exist_ok=True)
    (bundle / "config.json").unlink(missing_ok=True)
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["root"] = {"path": str(rootfs), "readonly": True}
    spec["process"]["terminal"] = False
    spec["process"]["args"] = args
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


def hide_cgroup_unified() -> str:
    """crun 1.8 refuses this host's hybrid cgroups ("drop all controllers from cgroupv2") unless
    ``/sys/fs/cgroup/unified`` is out of sight. Move this process into a private mount namespace
    without it (BoxLite does not use that mount: both sides run in the same namespace).
    Call before any thread starts. Returns what was done."""
    if not os.path.ismount("/sys/fs/cgroup/unified"):
        return "no /sys/fs/cgroup/unified mount: nothing to hide"
    libc = ctypes.CDLL(None, use_errno=True)
    clone_newns, ms_rec, ms_private, mnt_detach = 0x00020000, 0x4000, 1 << 18, 2
    if libc.unshare(clone_newns) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    if libc.mount(None, b"/", None, ms_rec | ms_private, None) != 0:
        raise OSError(ctypes.get_errno(), "mount --make-rprivate /")
    if libc.umount2(b"/sys/fs/cgroup/unified", mnt_detach) != 0:
        raise OSError(ctypes.get_errno(), "umount /sys/fs/cgroup/unified")
    return "private mount namespace without /sys/fs/cgroup/unified (for crun)"


def require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise SystemExit(f"missing tools: {', '.join(missing)} (scripts/test.sh installs them)")


def boxlite_cli() -> list[str]:
    """The `boxlite` console script next to this interpreter, else ``python -m boxlite.cli``."""
    script = Path(sys.executable).with_name("boxlite")
    return [str(script)] if script.exists() else [sys.executable, "-m", "boxlite.cli"]


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    stats: dict[str, float]
    unit: str
    note: str = ""
    ratio: float | None = None
    compare: bool = True


@dataclass
class Section:
    """One comparison: rows measured together; the first row with ``baseline`` set is the peer
    the others are divided by."""

    title: str
    kind: str  # what is compared: "library", "process", "memory", "cache hit", ...
    rows: list[Row] = field(default_factory=list)
    baseline: str | None = None
    load_before: list[float] = field(default_factory=list)
    load_after: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(
        self, name: str, samples: list[float] | dict[str, float], unit: str, note: str = "", compare: bool = True
    ) -> Row:
        """``compare=False``: a breakdown or reference row, printed without a ratio."""
        stats = summarize(samples) if isinstance(samples, list) else dict(samples)
        row = Row(name, stats, unit, note, compare=compare)
        self.rows.append(row)
        return row

    def finish(self) -> None:
        base = next((r for r in self.rows if r.name == self.baseline), None)
        if base is None or not base.stats.get("median"):
            return
        for r in self.rows:
            if r is not base and r.compare and "median" in r.stats:
                r.ratio = r.stats["median"] / base.stats["median"]


class Report:
    def __init__(self, bench: str, args: argparse.Namespace) -> None:
        self.bench = bench
        self.args = args
        self.sections: list[Section] = []
        self.info: dict[str, Any] = {}
        self.started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.t0 = time.monotonic()

    def section(self, title: str, kind: str, baseline: str | None = None) -> Section:
        s = Section(title, kind, baseline=baseline, load_before=loadavg())
        self.sections.append(s)
        print(f"--- {self.bench}: {title} (load {fmt_load(s.load_before)})", file=sys.stderr, flush=True)
        return s

    def close(self, s: Section) -> None:
        s.load_after = loadavg()
        s.finish()
        print(section_markdown(s), flush=True)

    def to_json(self) -> dict[str, Any]:
        return {
            "bench": self.bench,
            "started": self.started,
            "seconds": round(time.monotonic() - self.t0, 1),
            "args": {k: v for k, v in vars(self.args).items() if isinstance(v, (int, float, str, bool, type(None)))},
            "info": self.info,
            "sections": [
                {
                    "title": s.title,
                    "kind": s.kind,
                    "baseline": s.baseline,
                    "load_before": s.load_before,
                    "load_after": s.load_after,
                    "notes": s.notes,
                    "rows": [
                        {"name": r.name, "unit": r.unit, "note": r.note, "ratio": r.ratio, **r.stats} for r in s.rows
                    ],
                }
                for s in self.sections
            ],
        }

    def save(self) -> None:
        if getattr(self.args, "json", None):
            Path(self.args.json).write_text(json.dumps(self.to_json(), indent=1) + "\n")


def fmt_load(load: list[float]) -> str:
    return " ".join(f"{x:.2f}" for x in load) if load else "?"


def fmt_value(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "s":
        return f"{v * 1000:.1f} ms" if v < 1 else f"{v:.2f} s"
    if unit == "MiB":
        return f"{v:.2f} MiB"
    return f"{v:.3g} {unit}"


def section_markdown(s: Section) -> str:
    head = f"#### {s.title}\n\n_{s.kind}; load {fmt_load(s.load_before)} → {fmt_load(s.load_after)}_\n\n"
    lines = ["| contender | median | min | max | IQR | n | ratio | note |", "|---|---|---|---|---|---|---|---|"]
    for r in s.rows:
        st = r.stats
        iqr = f"{fmt_value(st.get('p25'), r.unit)} – {fmt_value(st.get('p75'), r.unit)}" if "p25" in st else "-"  # noqa: RUF001
        ratio = "peer" if r.name == s.baseline else (f"{r.ratio:.2f}×" if r.ratio is not None else "-")  # noqa: RUF001
        lines.append(
            f"| {r.name} | {fmt_value(st.get('median'), r.unit)} | {fmt_value(st.get('min'), r.unit)} | "
            f"{fmt_value(st.get('max'), r.unit)} | {iqr} | {int(st.get('n', 0))} | {ratio} | {r.note} |"
        )
    notes = "".join(f"\n- {n}" for n in s.notes)
    return head + "\n".join(lines) + ("\n" + notes if notes else "") + "\n"


def report_markdown(data: dict[str, Any]) -> str:
    """Markdown of a saved report (``Report.to_json()``)."""
    out = [f"### {data['bench']} ({data['started']}, {data['seconds']} s)\n"]
    for s in data["sections"]:
        sec = Section(s["title"], s["kind"], baseline=s["baseline"], load_before=s["load_before"])
        sec.load_after, sec.notes = s["load_after"], s["notes"]
        keys = ("name", "unit", "note", "ratio")
        for r in s["rows"]:
            row = sec.add(r["name"], {k: v for k, v in r.items() if k not in keys}, r["unit"], r["note"])
            row.ratio = r["ratio"]
        out.append(section_markdown(sec))
    return "\n".join(out)


def common_args(description: str | None, runs: int, quick_runs: int) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--runs", type=int, default=None, help=f"samples per contender (default {runs}; --quick: {quick_runs})"
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: fewest samples and sizes, minutes not hours")
    ap.add_argument("--json", type=Path, help="write the report as JSON here")
    ap.set_defaults(default_runs=runs, quick_runs=quick_runs)
    return ap


def parse(ap: argparse.ArgumentParser) -> argparse.Namespace:
    args = ap.parse_args()
    if args.runs is None:
        args.runs = args.quick_runs if args.quick else args.default_runs
    tag_environment()
    compile_bytecode()
    return args
