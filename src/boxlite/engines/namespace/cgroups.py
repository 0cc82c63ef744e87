"""Per-box cgroups on v1 (one hierarchy per controller) and v2 (unified) hosts.

A box's cgroup lives under the creating process's own cgroup (``.../boxlite/<box id>``), so it
inherits the limits its parent has. The paths are saved in the box dir so that any process can
read the box's metrics or remove the cgroup later. The box's keeper (``agent/keeper.py``, outside
these cgroups) removes them as soon as the box's PID 1 has exited, whether or not any runtime is
left to notice; :meth:`BoxCgroups.remove` is the runtime's own stop path and fallback.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ...agent.cgroupkill import kill_cgroup_members
from ...errors import EngineError

ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "freezer")  # freezer: pause/resume
DEFAULT_PIDS_LIMIT = 4096


@dataclass
class BoxCgroups:
    """The cgroup directories of one box (one per v1 controller, or one v2 dir)."""

    version: int
    paths: dict[str, str]

    def save(self, file: Path) -> None:
        file.write_text(json.dumps({"version": self.version, "paths": self.paths}))

    @classmethod
    def load(cls, file: Path) -> BoxCgroups | None:
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError):
            return None
        return cls(int(data["version"]), dict(data["paths"]))

    @property
    def procs_files(self) -> list[str]:
        return sorted({os.path.join(p, "cgroup.procs") for p in self.paths.values()})

    def remove(self, timeout: float = 2.0) -> None:
        """rmdir every directory, retrying while the last processes exit."""
        deadline = time.monotonic() + timeout
        for path in sorted(set(self.paths.values()), key=len, reverse=True):
            while os.path.isdir(path):
                try:
                    os.rmdir(path)
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    kill_cgroup_members(path)
                    time.sleep(0.01)

    def freezer(self) -> tuple[str, str, str] | None:
        """(state file, value that freezes, value that thaws), or None: no freezer (v1 without
        the freezer hierarchy, or a box started before boxes got one)."""
        if self.version == 2:
            return (f"{self.paths['unified']}/cgroup.freeze", "1", "0")
        if "freezer" in self.paths:
            return (f"{self.paths['freezer']}/freezer.state", "FROZEN", "THAWED")
        return None

    def set_frozen(self, frozen: bool) -> None:
        """Ask the kernel to freeze (or thaw) every process of the box; :meth:`is_frozen` says when done."""
        spec = self.freezer()
        if spec is None:
            raise EngineError("this box has no freezer cgroup (started before pause existed?): restart it")
        _write(spec[0], spec[1] if frozen else spec[2])

    def is_frozen(self) -> bool:
        """True once every process of the box is frozen (v1: ``FROZEN``, v2: ``frozen 1``)."""
        if self.version == 2:
            return "frozen 1" in _read(f"{self.paths['unified']}/cgroup.events").splitlines()
        return "freezer" in self.paths and _read(f"{self.paths['freezer']}/freezer.state").strip() == "FROZEN"

    def read(self) -> dict[str, float]:
        """memory_bytes, memory_peak_bytes, cpu_usage_ns, pids."""
        out: dict[str, float] = {}
        if self.version == 2:
            base = self.paths["unified"]
            out["memory_bytes"] = _read_int(f"{base}/memory.current")
            out["memory_peak_bytes"] = _read_int(f"{base}/memory.peak")
            out["pids"] = _read_int(f"{base}/pids.current")
            for line in _read(f"{base}/cpu.stat").splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    out["cpu_usage_ns"] = int(value) * 1000
        else:
            if "memory" in self.paths:
                out["memory_bytes"] = _read_int(f"{self.paths['memory']}/memory.usage_in_bytes")
                out["memory_peak_bytes"] = _read_int(f"{self.paths['memory']}/memory.max_usage_in_bytes")
            if "cpuacct" in self.paths:
                out["cpu_usage_ns"] = _read_int(f"{self.paths['cpuacct']}/cpuacct.usage")
            if "pids" in self.paths:
                out["pids"] = _read_int(f"{self.paths['pids']}/pids.current")
        return {k: v for k, v in out.items() if v >= 0}


def is_v2() -> bool:
    return (ROOT / "cgroup.controllers").exists()


Step = list[object]
"""One step of a cgroup plan: ``["mkdir", dir, "", required]`` or ``["write", file, value,
required]`` (an optional write is skipped when the file does not exist)."""


def plan(
    box_id: str, memory_mib: int | None, cpus: float | None, pids_limit: int | None
) -> tuple[BoxCgroups, list[Step]]:
    """The box's cgroups, and the steps that create them and apply its limits.

    The steps are carried out by the box's boot process (``agent/keeper.py:make_cgroups``),
    after it forked the box's keeper, so that no box cgroup ever exists without a keeper to
    remove it (an owner killed between here and the hand-over leaves nothing). Here only the
    shared parents (``.../boxlite``) are made, and a limit no hierarchy can enforce is refused
    (EngineError)."""
    pids = pids_limit if pids_limit is not None else DEFAULT_PIDS_LIMIT
    if is_v2():
        return _plan_v2(box_id, memory_mib, cpus, pids)
    return _plan_v1(box_id, memory_mib, cpus, pids)


def _own_cgroups() -> dict[str, str]:
    """Our cgroup path per v1 controller (key ``""``: the v2 hierarchy), from one read of
    /proc/self/cgroup (the first line naming a controller wins)."""
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(","):
                own.setdefault(controller, path.lstrip("/"))
    return own


_REAL_PARENTS: dict[str, str] = {}
"""``.../boxlite`` parents this process has made, by path, with symlinks resolved (v1's ``cpu``
is a link to ``cpu,cpuacct``): resolving took ~30 ``lstat`` calls per box start."""


def _made_parent(parent: str) -> str:
    """Make ``parent`` if it is missing; its real path. Raises OSError."""
    real = _REAL_PARENTS.get(parent)
    if real is not None:
        try:
            os.mkdir(real)  # one call: someone may have removed it since (then it is made again)
        except FileExistsError:
            return real
        except OSError:  # its own parent is gone too: made below
            pass
    os.makedirs(parent, exist_ok=True)
    real = _REAL_PARENTS[parent] = os.path.realpath(parent)
    return real


def _plan_v1(box_id: str, memory_mib: int | None, cpus: float | None, pids: int) -> tuple[BoxCgroups, list[Step]]:
    paths: dict[str, str] = {}
    steps: list[Step] = []
    own = _own_cgroups()
    for controller in V1_CONTROLLERS:
        parent = os.path.join(ROOT, controller, own.get(controller, ""), "boxlite")
        if parent not in _REAL_PARENTS and not os.path.isdir(os.path.join(ROOT, controller)):
            continue  # not mounted
        required = bool(memory_mib if controller == "memory" else cpus if controller == "cpu" else False)
        try:
            real = _made_parent(parent)
        except OSError as e:
            if required:
                raise EngineError(f"cannot create {controller} cgroup {parent}: {e}") from None
            continue
        paths[controller] = f"{real}/{box_id}"
        steps.append(["mkdir", paths[controller], "", required])
    if memory_mib:
        _need(paths, "memory", memory_mib)
        limit = str(memory_mib * 1024 * 1024)
        steps.append(["write", f"{paths['memory']}/memory.limit_in_bytes", limit, True])
        steps.append(["write", f"{paths['memory']}/memory.memsw.limit_in_bytes", limit, False])
    if cpus:
        _need(paths, "cpu", cpus)
        steps.append(["write", f"{paths['cpu']}/cpu.cfs_period_us", "100000", True])
        steps.append(["write", f"{paths['cpu']}/cpu.cfs_quota_us", str(int(cpus * 100000)), True])
    if "pids" in paths:
        steps.append(["write", f"{paths['pids']}/pids.max", str(pids), False])
    return BoxCgroups(1, paths), steps


def _plan_v2(box_id: str, memory_mib: int | None, cpus: float | None, pids: int) -> tuple[BoxCgroups, list[Step]]:
    parent = ROOT / _own_cgroups().get("", "") / "boxlite"
    path = parent / box_id
    try:
        parent.mkdir(parents=True, exist_ok=True)
        wanted = {"memory", "pids", "cpu"} & set(_read(f"{parent}/cgroup.controllers").split())
        if wanted:
            _write(f"{parent}/cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(wanted)))
    except OSError as e:
        raise EngineError(f"cannot create cgroup {parent}: {e}") from None
    steps: list[Step] = [["mkdir", str(path), "", True]]
    if memory_mib:
        steps.append(["write", f"{path}/memory.max", str(memory_mib * 1024 * 1024), True])
        steps.append(["write", f"{path}/memory.swap.max", "0", False])
    if cpus:
        steps.append(["write", f"{path}/cpu.max", f"{int(cpus * 100000)} 100000", True])
    steps.append(["write", f"{path}/pids.max", str(pids), False])
    return BoxCgroups(2, {"unified": str(path)}), steps


def _need(paths: dict[str, str], controller: str, value: object) -> None:
    if controller not in paths:
        raise EngineError(f"a {controller} limit ({value}) was asked for but the {controller} cgroup is unavailable")


def _write(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        raise EngineError(f"cannot write {value!r} to {path}: {e.strerror}") from None


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _read_int(path: str) -> int:
    text = _read(path).strip()
    return int(text) if text.isdigit() else -1
